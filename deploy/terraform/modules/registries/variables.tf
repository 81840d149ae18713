variable "name" {
  description = "Prefix of the registry resources (KMS key alias), e.g. comments-api-production."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,50}$", var.name))
    error_message = "name: lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "aws_account_id" {
  description = "AWS account of the registries (12 digits), for the key policy."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "repositories" {
  description = <<-EOT
    ECR repositories to create, keyed by repository name (e.g. comments-api/dev):
    keep_images = how many images the lifecycle policy keeps (rollback depth),
    untagged_days = after how many days untagged images (superseded layers, failed pushes) expire.
  EOT
  type = map(object({
    keep_images   = number
    untagged_days = optional(number, 7)
  }))
  validation {
    condition     = length(var.repositories) > 0 && alltrue([for n, r in var.repositories : can(regex("^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$", n)) && r.keep_images >= 10 && r.untagged_days >= 1])
    error_message = "repositories: valid ECR names, keep_images >= 10 (enough to roll back), untagged_days >= 1."
  }
  # Both numbers go into the lifecycle policy JSON as they are: ECR refuses a fractional
  # countNumber when the policy is put, after the repository exists.
  validation {
    condition     = alltrue([for r in values(var.repositories) : floor(r.keep_images) == r.keep_images && floor(r.untagged_days) == r.untagged_days])
    error_message = "repositories: keep_images and untagged_days must be whole numbers."
  }
  # ECR names are 2-256 characters: a one-letter name matches the pattern above and is
  # refused by CreateRepository.
  validation {
    condition     = alltrue([for n in keys(var.repositories) : length(n) >= 2 && length(n) <= 256])
    error_message = "repositories: names of 2-256 characters (ECR's limits), e.g. comments-api/dev."
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
