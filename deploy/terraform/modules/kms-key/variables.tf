variable "alias" {
  description = "The key's alias, without the alias/ prefix."
  type        = string
}

variable "description" {
  description = "What the key encrypts."
  type        = string
}

variable "aws_account_id" {
  description = "The account whose root principal administers the key."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id is 12 digits."
  }
}

variable "region" {
  description = "The region of the CloudWatch Logs service allowed to use the key (with log_group_arn_pattern)."
  type        = string
  default     = null
}

variable "log_group_arn_pattern" {
  description = "CloudWatch log groups (an ARN, * allowed) that may be encrypted with the key; empty: none."
  type        = string
  default     = ""
  nullable    = false
  validation {
    condition     = var.log_group_arn_pattern == "" || can(regex("^arn:aws:logs:", var.log_group_arn_pattern))
    error_message = "log_group_arn_pattern is a CloudWatch Logs ARN."
  }
  validation {
    condition     = var.log_group_arn_pattern == "" || var.region != null
    error_message = "region names the Logs service allowed to use the key."
  }
}

variable "tags" {
  description = "Tags of the key (the caller's, with its Name)."
  type        = map(string)
  default     = {}
}
