variable "name" {
  description = "Name of the IAM role GitHub Actions assumes, e.g. comments-api-ci-production."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.name))
    error_message = "name must be a valid IAM role name (at most 64 characters)."
  }
}

variable "aws_account_id" {
  description = "AWS account of the role and of the GitHub OIDC provider (12 digits)."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "github_repository" {
  description = "The one GitHub repository (owner/name) whose workflows may assume the role."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name, without wildcards."
  }
}

variable "github_environment" {
  description = "GitHub Environment whose jobs may assume the role (token subject repo:OWNER/NAME:environment:THIS). Restrict the environment to its branch in the repository settings (production: main only, with reviewers)."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+$", var.github_environment))
    error_message = "github_environment: letters, digits, dot, dash, underscore; no wildcards."
  }
}

variable "github_branches" {
  description = "Branches whose jobs without an environment may also assume the role (subject repo:OWNER/NAME:ref:refs/heads/BRANCH), e.g. [\"dev\"] for the build that pushes to the dev registry. Empty: environment jobs only."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for b in var.github_branches : can(regex("^[A-Za-z0-9_./-]+$", b))])
    error_message = "github_branches: exact branch names, no wildcards."
  }
  # A name git cannot give a branch (git check-ref-format) never appears in a token's
  # subject, so the role would silently never match it: no "..", no empty component
  # (leading, trailing or doubled "/"), no component starting with "." or ending in
  # ".lock", no trailing "." and no leading "-". Spaces and ~^:?*[\ are refused above.
  validation {
    condition = alltrue([for b in var.github_branches : !strcontains(b, "..") && !startswith(b, "-") && !endswith(b, ".") && alltrue([
      for part in split("/", b) : part != "" && !startswith(part, ".") && !endswith(part, ".lock")
    ])])
    error_message = "github_branches: names git accepts for a branch (git check-ref-format): no \"..\", no leading, trailing or doubled \"/\", no part starting with \".\" or ending in \".lock\", not ending in \".\", not starting with \"-\"."
  }
}

variable "push_repository_arns" {
  description = "ECR repositories the role may push to (and pull from)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for a in var.push_repository_arns : can(regex("^arn:aws[a-z-]*:ecr:[a-z0-9-]+:[0-9]{12}:repository/[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$", a))])
    error_message = "push_repository_arns: ECR repository ARNs naming one repository (arn:aws:ecr:REGION:ACCOUNT:repository/NAME), no wildcards."
  }
}

variable "pull_repository_arns" {
  description = "ECR repositories the role may only read (production reads the dev registry to promote a digest)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for a in var.pull_repository_arns : can(regex("^arn:aws[a-z-]*:ecr:[a-z0-9-]+:[0-9]{12}:repository/[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$", a))])
    error_message = "pull_repository_arns: ECR repository ARNs naming one repository (arn:aws:ecr:REGION:ACCOUNT:repository/NAME), no wildcards."
  }
}

variable "deploy_cluster" {
  description = "EKS cluster the role deploys to (null: no deploy rights): its name, ARN and the namespaces where the role gets namespace-scoped admin."
  type = object({
    name       = string
    arn        = string
    namespaces = list(string)
  })
  default = null
  validation {
    condition     = var.deploy_cluster == null || try(length(var.deploy_cluster.namespaces) > 0 && !contains(var.deploy_cluster.namespaces, "kube-system"), false)
    error_message = "deploy_cluster.namespaces: at least one namespace, never kube-system."
  }
  # EKS reads a namespace ending in * as a prefix match: "*" or "kube-*" would hand the
  # role admin in kube-system too, past the check above. Only exact namespace names.
  validation {
    condition     = var.deploy_cluster == null || try(alltrue([for n in var.deploy_cluster.namespaces : can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", n))]), false)
    error_message = "deploy_cluster.namespaces: exact Kubernetes namespace names (lower-case letters, digits, dashes; at most 63 characters), no wildcards."
  }
}

variable "kubernetes_group" {
  description = "Kubernetes group the deploy access entry puts the role in: the subject of the RoleBinding and ClusterRoleBinding in deploy/k8s/cluster-rbac, which grant what AmazonEKSAdminPolicy does not (the overlay's custom resources, its Namespace). Only used with deploy_cluster."
  type        = string
  default     = "comments-api-deployers"
  # EKS refuses "system:" groups in an access entry (no colon passes here), and a name
  # of one simple form is easy to match in the bindings' subjects.
  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$", var.kubernetes_group))
    error_message = "kubernetes_group: lower-case letters, digits, dots and dashes (at most 63), so never a system: group."
  }
}

variable "max_session_seconds" {
  description = "Longest CI session, seconds."
  type        = number
  default     = 3600
  validation {
    # IAM's MaxSessionDuration starts at 3600: below that the role cannot be created.
    condition     = var.max_session_seconds >= 3600 && var.max_session_seconds <= 14400
    error_message = "max_session_seconds must be between 3600 (IAM's minimum for a role) and 14400."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.tags : length(k) > 0 && length(k) <= 128 && length(v) <= 256])
    error_message = "tags: keys of 1-128 characters, values of at most 256 (AWS limits)."
  }
}
