variable "environment" {
  description = "Environment name: resource names (comments-api-<this>), the Environment tag and the GitHub environment the CI role trusts."
  type        = string
  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production."
  }
}

variable "aws_account_id" {
  description = "AWS account of this environment (12 digits). Passed in, never looked up, so planning needs no credentials."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "availability_zones" {
  description = "The three availability zones to spread the VPC, the nodes and the database over."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) == 3 && length(distinct(var.availability_zones)) == 3
    error_message = "availability_zones: exactly three distinct zones."
  }
  # A zone of another region (or a zone ID such as euw1-az1) plans fine and fails when
  # the first subnet is created.
  validation {
    condition     = alltrue([for z in var.availability_zones : startswith(z, var.region) && can(regex("^[a-z]$", trimprefix(z, var.region)))])
    error_message = "availability_zones: zone names of var.region, i.e. the region followed by one letter (eu-west-1a for eu-west-1)."
  }
}

variable "vpc_cidr" {
  description = "IPv4 range of the VPC, /16 to /20 (modules/network gives each private subnet a quarter of it and the public ones a sixteenth each)."
  type        = string
  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && try(cidrsubnet(var.vpc_cidr, 0, 0) == var.vpc_cidr, false)
    error_message = "vpc_cidr: an IPv4 range in canonical form, without host bits (10.40.0.0/16, not 10.40.1.0/16); the subnets are carved from it as IPv4."
  }
  # Private subnets are quarters (/18-/22), public ones sixteenths (/20-/24): a /20 is
  # the narrowest range that leaves each zone's nodes and pods (VPC CNI) 1024 addresses.
  validation {
    condition     = try(tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20, false)
    error_message = "vpc_cidr: a prefix between /16 (AWS's largest VPC) and /20 (private subnets of /22, public ones of /24)."
  }
}

variable "github_repository" {
  description = "GitHub repository (owner/name) whose workflows deploy this environment."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes minor version (modules/cluster validates it and says why its default)."
  type        = string
  default     = "1.35"
}

variable "load_balancer_controller_policy_json" {
  description = "IAM policy (JSON) of the AWS Load Balancer Controller release to install, for its IRSA role (modules/cluster validates it); empty: no role."
  type        = string
  default     = ""
  nullable    = false
}

variable "cluster_api_public_cidrs" {
  description = "CIDRs allowed to the Kubernetes API over the internet; empty keeps it private."
  type        = list(string)
  default     = []
}

variable "node_instance_types" {
  description = "Instance types of the nodes."
  type        = list(string)
}

variable "nodes_per_zone" {
  description = "Nodes per zone (min, desired, max); three zones."
  type = object({
    min     = number
    desired = number
    max     = number
  })
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "db_backup_retention_days" {
  description = "Days of automated database backups."
  type        = number
}

variable "admin_role_arns" {
  description = "IAM roles with cluster-admin (operators, break-glass)."
  type        = list(string)
  default     = []
}

variable "app_namespace" {
  description = "Kubernetes namespace of the app: the overlay's `namespace:` (deploy/k8s/overlays/<env>)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.app_namespace)) && var.app_namespace != "kube-system"
    error_message = "app_namespace must be a valid namespace name other than kube-system."
  }
}

variable "owner" {
  description = "Team owning the environment (Owner tag)."
  type        = string
  default     = "platform"
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, a zone outage cuts egress) instead of one per zone."
  type        = bool
  validation {
    condition     = !(var.environment == "production" && var.single_nat_gateway)
    error_message = "production keeps a NAT gateway per zone."
  }
}

variable "deletion_protection" {
  description = "RDS deletion protection."
  type        = bool
  validation {
    condition     = var.environment != "production" || var.deletion_protection
    error_message = "production's database is deletion-protected."
  }
}

variable "final_snapshot" {
  description = "Keep the database's data past a destroy: a final RDS snapshot, the automated backups and their KMS key. False (staging): a destroy leaves none of them."
  type        = bool
  validation {
    condition     = var.environment != "production" || var.final_snapshot
    error_message = "production's database takes a final snapshot."
  }
}

variable "repository" {
  description = "The ECR repository this environment creates and its CI role pushes to (validated by modules/registries)."
  type = object({
    name        = string
    keep_images = number
  })
}

variable "pull_repository_names" {
  description = "ECR repositories (of other roots) the CI role may only read: production reads the dev registry to promote a digest."
  type        = list(string)
  default     = []
  # They become the Resource of the role's read statement: "*" would read every registry
  # of the account.
  validation {
    condition     = alltrue([for n in var.pull_repository_names : can(regex("^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$", n))])
    error_message = "pull_repository_names: ECR repository names such as comments-api/dev (lower-case letters, digits, . _ - separators, / between path parts), no wildcards."
  }
}

variable "github_branches" {
  description = "Branches whose jobs without an environment may assume the CI role (with separate_deploy_role: the deploy role only) besides jobs of the GitHub environment named like this one; empty for production."
  type        = list(string)
  validation {
    condition     = var.environment != "production" || length(var.github_branches) == 0
    error_message = "production's CI role trusts the production GitHub environment only, no branch."
  }
}

variable "separate_deploy_role" {
  description = "Split the CI role in two: ci_role_arn pushes to var.repository (and reads pull_repository_names) and nothing else, and trusts only the jobs of ci_push_environment; ci_deploy_role_arn trusts the GitHub environment named like this one and github_branches, reads those registries and their scan findings and deploys to the cluster, but cannot push. Staging: its E2E job must not be able to overwrite what gets promoted. Production: false, one job promotes and deploys."
  type        = bool
  default     = false
}

variable "ci_push_environment" {
  description = "With separate_deploy_role: the GitHub Environment of the jobs that push (staging: dev-push, for dev.yml's build and sign). The push role trusts its subject (repo:OWNER/NAME:environment:THIS) and nothing else, so a job outside it (E2E, whose token carries ref:refs/heads/dev) cannot assume the push role. Restrict the environment to its branch in the repository settings (docs/terraform.md, section 2). Null without the split."
  type        = string
  default     = null
  validation {
    condition     = var.ci_push_environment == null || can(regex("^[A-Za-z0-9_.-]+$", var.ci_push_environment))
    error_message = "ci_push_environment: letters, digits, dot, dash, underscore; no wildcards."
  }
  # Without it the push role would trust the deploy role's subjects again, which every
  # job of the branch gets: the split would keep push rights out of a job's credentials
  # but not out of its reach.
  validation {
    condition     = (var.ci_push_environment != null) == var.separate_deploy_role
    error_message = "ci_push_environment: required with separate_deploy_role (the push role trusts that environment only), and null without it."
  }
  # GitHub compares environment names case-insensitively: the environment the deploy
  # role trusts must not be the push environment under another spelling.
  validation {
    condition     = var.ci_push_environment == null || try(lower(var.ci_push_environment) != lower(var.environment), true)
    error_message = "ci_push_environment must differ from the environment (in any case): the deploy role trusts that one."
  }
}

variable "node_ami_release_version" {
  description = "AMI release of the EKS nodes (modules/cluster validates it); null: the latest at node group creation, never refreshed after (docs/terraform.md, node OS images)."
  type        = string
  default     = null
}
