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
  description = "IAM roles with cluster-admin (operators, break-glass)."
  type        = list(string)
  default     = []
}

variable "load_balancer_controller_policy_json" {
  description = "IAM policy (JSON) of the AWS Load Balancer Controller release you install: -var load_balancer_controller_policy_json=\"$(cat iam_policy.json)\" at every plan and apply (docs/terraform.md). Empty (the default): no role for the controller."
  type        = string
  default     = ""
  nullable    = false
}
