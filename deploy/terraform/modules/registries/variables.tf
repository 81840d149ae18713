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
    keep_images = how many manifests the lifecycle policy keeps, newest first. ECR may
    count each manifest of a release (image index, image, attestation, signature) as an
    image, so it keeps keep_images / 4 releases of up to 4 manifests (the rollback depth).
  EOT
  type = map(object({
    keep_images = number
  }))
  validation {
    condition     = length(var.repositories) > 0 && alltrue([for n, r in var.repositories : can(regex("^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$", n)) && r.keep_images >= 40])
    error_message = "repositories: valid ECR names, keep_images >= 40 (10 releases of up to 4 manifests each: enough to roll back)."
  }
  # The number goes into the lifecycle policy JSON as it is: ECR refuses a fractional
  # countNumber when the policy is put, after the repository exists.
  validation {
    condition     = alltrue([for r in values(var.repositories) : floor(r.keep_images) == r.keep_images])
    error_message = "repositories: keep_images must be a whole number."
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
