variable "name" {
  description = "IAM role name, e.g. comments-api-production-secrets."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.name))
    error_message = "name must be a valid IAM role name (at most 64 characters)."
  }
}

variable "oidc_provider_arn" {
  description = "IAM OIDC provider of the EKS cluster (cluster module output)."
  type        = string
}

variable "oidc_issuer_url" {
  description = "OIDC issuer URL of the EKS cluster (cluster module output)."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the service account."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a valid Kubernetes namespace name."
  }
}

variable "service_account" {
  description = "Kubernetes service account that may assume the role (annotate it with eks.amazonaws.com/role-arn)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.service_account))
    error_message = "service_account must be a valid Kubernetes name."
  }
}

variable "secret_arns" {
  description = "Secrets Manager secrets the role may read."
  type        = list(string)
  validation {
    condition     = length(var.secret_arns) > 0
    error_message = "secret_arns: at least one secret."
  }
}

variable "kms_key_arns" {
  description = "KMS keys that encrypt those secrets (kms:Decrypt through Secrets Manager only)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
