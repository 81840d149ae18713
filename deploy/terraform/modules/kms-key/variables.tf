variable "alias" {
  description = "The key's alias, without the alias/ prefix (the module adds it)."
  type        = string
  # KMS: the whole AliasName, alias/ included, is 1-256 letters, digits, / _ -, and
  # alias/aws/ is reserved for AWS managed keys. The callers pass the part after alias/.
  validation {
    condition     = can(regex("^[A-Za-z0-9/_-]{1,250}$", var.alias)) && !startswith(var.alias, "aws/")
    error_message = "alias: 1-250 letters, digits, /, _ or - (KMS allows 256 characters including the alias/ prefix the module adds), not starting with aws/ (alias/aws/ is reserved for AWS managed keys)."
  }
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

variable "prevent_destroy" {
  description = "Refuse any plan that destroys or replaces the key (terraform_data.keep_key): for keys of data that outlives the stack, such as a final database snapshot or the Terraform state."
  type        = bool
  default     = false
  nullable    = false
}
