# What whoever deploys replaces (terraform.tfvars); modules/platform validates each and
# the environment's own choices are in main.tf.

variable "aws_account_id" {
  description = "AWS account of this environment (12 digits; passed in, never looked up)."
  type        = string
}

variable "github_repository" {
  description = "GitHub repository (owner/name) whose workflows deploy this environment."
  type        = string
}

variable "region" {
  description = "AWS region."
  type        = string
}

variable "availability_zones" {
  description = "The three availability zones of the region to spread over."
  type        = list(string)
}

variable "cluster_api_public_cidrs" {
  description = "CIDRs allowed to the Kubernetes API over the internet; empty keeps it private."
  type        = list(string)
}

variable "admin_role_arns" {
  description = "IAM roles with cluster-admin (operators, break-glass) through EKS access entries. Required, no default: the cluster grants its creator nothing (bootstrap_cluster_creator_admin_permissions = false), so without one nobody could run kubectl after the apply."
  type        = list(string)
  validation {
    condition     = length(var.admin_role_arns) > 0
    error_message = "admin_role_arns: at least one IAM role ARN; without it nobody, the role running the apply included, can administer the cluster."
  }
}

variable "node_ami_release_version" {
  description = "AMI release of the nodes (e.g. 1.35.0-20261201); null: the latest when the node groups are created, never refreshed after. Raise it to patch the node OS (docs/terraform.md)."
  type        = string
  default     = null
}

variable "load_balancer_controller_policy_json" {
  description = "IAM policy (JSON) of the AWS Load Balancer Controller release you install: -var load_balancer_controller_policy_json=\"$(cat iam_policy.json)\" at every plan and apply (docs/terraform.md). Empty (the default): no role for the controller."
  type        = string
  default     = ""
  nullable    = false
}
