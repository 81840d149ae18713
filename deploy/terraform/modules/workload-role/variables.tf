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
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN."
  }
}

variable "oidc_issuer_url" {
  description = "OIDC issuer URL of the EKS cluster (cluster module output)."
  type        = string
  validation {
    condition     = startswith(var.oidc_issuer_url, "https://")
    error_message = "oidc_issuer_url must be an https URL."
  }
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
    condition     = length(var.secret_arns) > 0 && alltrue([for a in var.secret_arns : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", a))])
    error_message = "secret_arns: at least one Secrets Manager secret ARN."
  }
  # IAM expands * in a Resource: secret:* would let the service account read every secret
  # of the account. A ? matches one character: "name-??????" is AWS's documented way to
  # name a secret without its random six-character suffix, so it stays allowed.
  validation {
    condition     = alltrue([for a in var.secret_arns : !strcontains(a, "*")])
    error_message = "secret_arns: exact secret ARNs (or NAME-?????? for the random suffix), no * wildcard."
  }
}

variable "kms_key_arns" {
  description = "KMS keys that encrypt those secrets (kms:Decrypt through Secrets Manager only)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for a in var.kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", a))])
    error_message = "kms_key_arns: KMS key ARNs naming one key (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID), no wildcards."
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
