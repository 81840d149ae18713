variable "name" {
  description = "Identifier of the DB instance and prefix of its resources, e.g. comments-api-production."
  type        = string
  # Every name derived from it, and its limit: the instance identifier (name, 63) and the
  # final snapshot (name-final, 255), which refuse a trailing dash and "--"; the
  # parameter group (name-pgNN), security group (name-postgres), subnet group (name) and
  # KMS alias (alias/name-rds), all 255 or more; the enhanced-monitoring IAM role
  # (name-rds-monitoring, IAM's 64) is the tightest: 64 - 15 = 49.
  validation {
    condition     = length(var.name) >= 3 && length(var.name) <= 49 && can(regex("^[a-z][a-z0-9]*(-[a-z0-9]+)*$", var.name))
    error_message = "name: 3-49 lower-case letters, digits and single dashes, starting with a letter and not ending with a dash (RDS instance identifiers refuse a trailing dash and \"--\"); at most 49 because the enhanced-monitoring IAM role <name>-rds-monitoring must fit IAM's 64 characters."
  }
}

variable "aws_account_id" {
  description = "AWS account of the database (12 digits), for the key policy."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "region" {
  description = "AWS region, e.g. eu-west-1."
  type        = string
  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must be a VPC ID (vpc-...)."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the DB subnet group (one per zone; the Multi-AZ standby goes to another zone)."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) >= 2 && alltrue([for id in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", id))])
    error_message = "subnet_ids: at least two subnet IDs (subnet-...) in different zones."
  }
  # The same subnet twice covers one zone: RDS refuses the DB subnet group on create.
  validation {
    condition     = length(distinct(var.subnet_ids)) == length(var.subnet_ids)
    error_message = "subnet_ids: each subnet once (at least two different subnets, in different zones)."
  }
}

variable "allowed_security_groups" {
  description = "Security groups admitted on the PostgreSQL port, keyed by a static label (e.g. { eks = <cluster security group> }; static keys because the IDs are only known after apply). Nothing else is admitted."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for id in values(var.allowed_security_groups) : can(regex("^sg-[0-9a-f]+$", id))])
    error_message = "allowed_security_groups: security group IDs (sg-...) only."
  }
}

variable "engine_version" {
  description = "PostgreSQL version: a major (\"16\", minor upgrades automatic) or major.minor."
  type        = string
  default     = "16"
  # Majors still in RDS standard support (13's ended 2026-02-28, 14's ends 2027-02-28:
  # the RDS for PostgreSQL release calendar). An older one would run under RDS Extended
  # Support (the default engine_lifecycle_support), billed per vCPU-hour on top of the
  # instance, which no plan shows. Which minors RDS still offers only the API knows:
  # `aws rds describe-db-engine-versions --engine postgres` (docs/terraform.md).
  validation {
    condition     = can(regex("^(1[4-9])(\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be a PostgreSQL major in RDS standard support, 14 or later (13 and older would be billed for RDS Extended Support), as a major or major.minor, e.g. 16 or 17.7."
  }
}

variable "instance_class" {
  description = "DB instance class."
  type        = string
  default     = "db.t4g.medium"
  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.instance_class))
    error_message = "instance_class must look like db.t4g.medium."
  }
}

variable "allocated_storage_gb" {
  description = "Initial storage, GiB (gp3)."
  type        = number
  default     = 20
  validation {
    condition     = var.allocated_storage_gb >= 20 && var.allocated_storage_gb <= 65536
    error_message = "allocated_storage_gb must be between 20 and 65536."
  }
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling, GiB."
  type        = number
  default     = 200
  validation {
    condition     = var.max_allocated_storage_gb >= 20 && var.max_allocated_storage_gb <= 65536
    error_message = "max_allocated_storage_gb must be between 20 and 65536."
  }
  # RDS refuses a storage autoscaling ceiling less than 10% above the allocated storage
  # ("The maximum allocated storage must be increased by at least 10 percent") on create.
  validation {
    condition     = var.max_allocated_storage_gb >= var.allocated_storage_gb * 1.1
    error_message = "max_allocated_storage_gb must be at least 10% above allocated_storage_gb (RDS storage autoscaling)."
  }
}

variable "multi_az" {
  description = "Synchronous standby in another zone with automatic failover."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 7
  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35 (0 would disable backups)."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (production: true)."
  type        = bool
  default     = true
}

variable "final_snapshot" {
  description = "Keep data past a destroy (production: true): a final snapshot, the automated backups, and the KMS key they are encrypted with (prevent_destroy). False: a destroy leaves nothing, backups and key included."
  type        = bool
  default     = true
}

variable "db_name" {
  description = "Database created on the instance."
  type        = string
  default     = "comments"
  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name: lower-case letters, digits and underscores, starting with a letter."
  }
}

variable "master_username" {
  description = "Master user name (not secret). Its password is generated and kept by RDS in Secrets Manager; it never appears in variables, state outputs or plans."
  type        = string
  default     = "comments_api"
  # RDS for PostgreSQL: 1-63 characters (PostgreSQL's identifier length; the 16 of
  # MySQL does not apply), a letter first. RDS refuses "rdsadmin" (its own superuser)
  # and "admin" ("reserved word used by the engine"); "postgres", the console's default
  # for this engine, is accepted.
  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.master_username)) && !contains(["rdsadmin", "admin"], var.master_username)
    error_message = "master_username: 1-63 lower-case letters, digits and underscores, starting with a letter; not rdsadmin or admin (RDS reserves both for PostgreSQL)."
  }
}

variable "slow_query_ms" {
  description = "Statements slower than this are logged (log_min_duration_statement)."
  type        = number
  default     = 500
  validation {
    condition     = var.slow_query_ms >= 0
    error_message = "slow_query_ms must be >= 0."
  }
}

variable "log_retention_days" {
  description = "Days the exported PostgreSQL logs are kept in CloudWatch Logs."
  type        = number
  default     = 365
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value."
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
