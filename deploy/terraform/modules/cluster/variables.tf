variable "name" {
  description = "EKS cluster name, e.g. comments-api-production."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,38}$", var.name))
    error_message = "name: 3-39 characters, lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "aws_account_id" {
  description = "AWS account of the cluster (12 digits), for key policies."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "region" {
  description = "AWS region, e.g. eu-west-1."
  type        = string
  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and nodes. Check what EKS offers before an apply: `aws eks describe-cluster-versions` (docs/terraform.md)."
  type        = string
  # 1.35: in EKS standard support from 2026-01-28 to 2027-03-27 (EKS release calendar).
  # The cluster's upgrade_policy is STANDARD: at the end of standard support EKS
  # upgrades the cluster itself, and Terraform's next plan would then ask for the old
  # version back. Raise this before that date.
  default = "1.35"
  # Only versions in standard support on 2026-12-05 or later (1.34's ended 2026-12-02):
  # an older one would start in extended support, which the STANDARD policy declines.
  validation {
    condition     = can(regex("^1\\.(3[5-9]|40)$", var.kubernetes_version))
    error_message = "kubernetes_version: an EKS minor version in standard support, 1.35 to 1.40, written 1.NN (e.g. 1.35); 1.34 and older are past standard support, 1.10 or 1.3 are not EKS versions."
  }
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must be a VPC ID (vpc-...)."
  }
}

variable "subnet_ids_by_zone" {
  description = "Private subnet per availability zone; one managed node group is created in each, so nodes are spread over every zone."
  type        = map(string)
  validation {
    condition     = length(var.subnet_ids_by_zone) >= 3 && alltrue([for id in values(var.subnet_ids_by_zone) : can(regex("^subnet-[0-9a-f]+$", id))])
    error_message = "subnet_ids_by_zone needs subnet IDs in at least three zones for a highly available cluster."
  }
}

variable "api_public_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API over the internet. Empty (the default) keeps the endpoint private: reach it from inside the VPC (VPN, bastion, self-hosted runner)."
  type        = list(string)
  default     = []
  validation {
    # The prefix length read as a number: "0.0.0.0/00" is a valid CIDR too, and slipped
    # past a check on the text "/0".
    condition     = alltrue([for c in var.api_public_cidrs : can(cidrhost(c, 0)) && try(tonumber(split("/", c)[1]) > 0, false)])
    error_message = "api_public_cidrs: valid CIDRs only, and never the whole internet (a /0 prefix, however written)."
  }
  # The cluster is IPv4 (EKS refuses IPv6 blocks on an IPv4 cluster), and a range with
  # host bits set (203.0.113.5/24) says one thing and allows another: it must equal its
  # canonical form.
  validation {
    condition     = alltrue([for c in var.api_public_cidrs : can(cidrnetmask(c)) && try(cidrsubnet(c, 0, 0) == c, false)])
    error_message = "api_public_cidrs: IPv4 CIDRs in canonical form, without host bits (203.0.113.0/24, not 203.0.113.5/24)."
  }
  # Several wide ranges add up to the whole internet (0.0.0.0/1 + 128.0.0.0/1) past the
  # /0 check. No admin or VPN network needs more than a /8 (16.7 million addresses), so
  # nothing wider is allowed; covering the internet would then take 256 entries.
  validation {
    condition     = alltrue([for c in var.api_public_cidrs : try(tonumber(split("/", c)[1]) >= 8, false)])
    error_message = "api_public_cidrs: prefixes of /8 or longer (at most 16.7 million addresses each); wider ranges, which together can cover the whole internet (0.0.0.0/1 + 128.0.0.0/1), are refused."
  }
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed nodes (first one preferred)."
  type        = list(string)
  default     = ["m6i.large"]
  validation {
    condition     = length(var.node_instance_types) > 0 && alltrue([for t in var.node_instance_types : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", t))])
    error_message = "node_instance_types: at least one instance type such as m6i.large."
  }
  # The node groups run the AL2023_x86_64_STANDARD AMI: EKS refuses Graviton (arm64)
  # types such as m7g.large, t4g.large or a1.large when it creates the node group.
  validation {
    condition     = alltrue([for t in var.node_instance_types : !can(regex("^([a-z]+[0-9]+g[a-z0-9-]*|a1)\\.", t))])
    error_message = "node_instance_types: x86_64 instance types only (the nodes run the AL2023_x86_64_STANDARD AMI), e.g. m6i.large or t3.large, not Graviton types such as m7g.large."
  }
}

variable "capacity_type" {
  description = "ON_DEMAND or SPOT capacity for the nodes."
  type        = string
  default     = "ON_DEMAND"
  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.capacity_type)
    error_message = "capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "nodes_per_zone" {
  description = "Node count of each zone's node group: min >= 1 keeps at least one node in every zone (3 zones => >= 3 nodes)."
  type = object({
    min     = number
    desired = number
    max     = number
  })
  default = { min = 1, desired = 1, max = 3 }
  validation {
    condition     = var.nodes_per_zone.min >= 1 && var.nodes_per_zone.desired >= var.nodes_per_zone.min && var.nodes_per_zone.max >= var.nodes_per_zone.desired
    error_message = "nodes_per_zone: 1 <= min <= desired <= max."
  }
}

variable "node_disk_size_gb" {
  description = "Root volume size of each node, GiB (encrypted gp3)."
  type        = number
  default     = 50
  validation {
    condition     = var.node_disk_size_gb >= 20 && var.node_disk_size_gb <= 1000
    error_message = "node_disk_size_gb must be between 20 and 1000."
  }
}

variable "log_retention_days" {
  description = "Days the control-plane logs are kept."
  type        = number
  default     = 365
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value."
  }
}

variable "admin_role_arns" {
  description = "IAM roles given cluster-admin through EKS access entries (operators). CI roles get namespace-scoped access in the ci-identity module instead."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for a in var.admin_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", a))])
    error_message = "admin_role_arns: IAM role ARNs only."
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

variable "load_balancer_controller_policy_json" {
  description = "IAM policy document (JSON) the AWS Load Balancer Controller publishes for the release you install (docs/install/iam_policy.json of its tag, docs/terraform.md). Empty (the default): no role for the controller."
  type        = string
  default     = ""
  nullable    = false
  # A policy document: a JSON object whose Statement is one statement or a non-empty
  # list of them, each with an Effect and an Action (or NotAction). Anything else (a
  # file name, the role's trust policy pasted by mistake, truncated JSON) fails here
  # rather than at apply time.
  validation {
    condition = var.load_balancer_controller_policy_json == "" || try(
      length(flatten([jsondecode(var.load_balancer_controller_policy_json).Statement])) > 0 &&
      alltrue([
        for s in flatten([jsondecode(var.load_balancer_controller_policy_json).Statement]) :
        contains(["Allow", "Deny"], s.Effect) && (can(s.Action) || can(s.NotAction)) && !can(s.Principal)
      ]),
      false
    )
    error_message = "load_balancer_controller_policy_json: the JSON of an IAM policy document (an object with a Statement of one or more statements, each with Effect Allow or Deny and an Action), as in the controller's docs/install/iam_policy.json; or empty for no role."
  }
  # The controller's policy never grants every action: an Allow of "*", "iam:*" or a
  # NotAction (everything but the listed) would give the controller's pods, and anyone
  # who can run a pod under its service account, the account. (HCL's && evaluates both
  # sides, hence the try around a missing Action.)
  validation {
    condition = var.load_balancer_controller_policy_json == "" || try(
      alltrue([
        for s in flatten([jsondecode(var.load_balancer_controller_policy_json).Statement]) :
        s.Effect != "Allow" || (!can(s.NotAction) && length(setintersection(toset([for a in flatten([try(s.Action, [])]) : lower(a)]), toset(["*", "*:*", "iam:*"]))) == 0)
      ]),
      true
    )
    error_message = "load_balancer_controller_policy_json: no statement may allow \"*\", \"iam:*\" or use NotAction with Allow; the controller's published policy does neither."
  }
  # IAM refuses a managed policy over 6,144 characters, not counting white space.
  validation {
    condition     = length(replace(var.load_balancer_controller_policy_json, "/\\s/", "")) <= 6144
    error_message = "load_balancer_controller_policy_json: over 6,144 characters without white space, the size IAM allows a managed policy."
  }
}

variable "node_ami_release_version" {
  description = "EKS-optimized AL2023 AMI release of the nodes, e.g. 1.35.0-20261201 (SSM /aws/service/eks/optimized-ami/<kubernetes_version>/amazon-linux-2023/x86_64/standard/recommended/release_version). Null: the latest release when a node group is created or its Kubernetes version changes, never refreshed after; set it to roll the nodes onto a newer image (docs/terraform.md)."
  type        = string
  default     = null
  # A release of the cluster's own minor version: EKS refuses another minor's AMI with
  # the node group's version, and "1.35" alone is a version, not a release.
  validation {
    condition     = var.node_ami_release_version == null || can(regex("^${replace(var.kubernetes_version, ".", "\\.")}\\.[0-9]+-[0-9]{8}$", var.node_ami_release_version))
    error_message = "node_ami_release_version: an AMI release of kubernetes_version's minor, written <major>.<minor>.<patch>-<YYYYMMDD> (e.g. 1.35.0-20261201), or null for the latest at creation."
  }
}
