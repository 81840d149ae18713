variable "bucket_name" {
  description = "Globally unique S3 bucket name for Terraform state, e.g. comments-api-tfstate-123456789012."
  type        = string
  validation {
    # No dots: the state key's KMS alias is alias/<bucket_name>, and KMS aliases allow
    # only letters, digits, / _ and -.
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,56}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name without dots (3-58 lower-case letters, digits, dashes; the state key's KMS alias is named after it and the log bucket appends -logs)."
  }
  # S3 reserves these prefixes (for both buckets, <name> and <name>-logs) and suffixes
  # (only <name>'s matter: the log bucket always ends in -logs). ".mrap" cannot occur
  # without dots. S3 refuses the bucket at create, after the plan looked fine.
  validation {
    condition = (
      !anytrue([for p in ["xn--", "sthree-", "amzn-s3-demo-"] : startswith(var.bucket_name, p)]) &&
      !anytrue([for x in ["-s3alias", "--ol-s3", "--x-s3", "--table-s3"] : endswith(var.bucket_name, x)])
    )
    error_message = "bucket_name: S3 reserves the prefixes xn--, sthree- and amzn-s3-demo- and the suffixes -s3alias, --ol-s3, --x-s3 and --table-s3 (access point, Object Lambda, directory and table buckets); choose a name without them."
  }
}

variable "aws_account_id" {
  description = "AWS account owning the state (12 digits)."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "noncurrent_version_days" {
  description = "Days superseded state versions are kept (the undo window for a bad apply)."
  type        = number
  default     = 90
  validation {
    condition     = var.noncurrent_version_days >= 30
    error_message = "noncurrent_version_days: at least 30 days."
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
