variable "aws_account_id" {
  description = "AWS account that holds the state and the platform (12 digits)."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "region" {
  description = "Region of the state bucket."
  type        = string
  default     = "eu-west-1"
  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "state_bucket_name" {
  description = "State bucket name; empty: comments-api-tfstate-<account id>."
  type        = string
  default     = ""
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub Actions OIDC identity provider (one per account; false if it already exists)."
  type        = bool
  default     = true
}

variable "owner" {
  description = "Team owning the resources (Owner tag)."
  type        = string
  default     = "platform"
}
