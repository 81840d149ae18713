# RDS PostgreSQL: Multi-AZ, encrypted with a customer key, TLS enforced, backups kept,
# logs exported, and a master password that only RDS and Secrets Manager ever see
# (manage_master_user_password): Terraform's variables, outputs and plans hold its ARN,
# never its value.
locals {
  major        = split(".", var.engine_version)[0]
  log_exports  = ["postgresql", "upgrade"]
  log_prefix   = "/aws/rds/instance/${var.name}"
  rds_log_arns = "arn:aws:logs:${var.region}:${var.aws_account_id}:log-group:${local.log_prefix}/*"
  # RDS refuses Performance Insights on the micro and small burstable classes (the create
  # fails); every larger class, db.t4g.medium included, supports it.
  performance_insights = !can(regex("^db\\.(t2|t3|t4g)\\.(micro|small)$", var.instance_class))
}

module "key" {
  source                = "../kms-key"
  alias                 = "${var.name}-rds"
  description           = "${var.name}: RDS storage, snapshots, master secret, Performance Insights, logs"
  aws_account_id        = var.aws_account_id
  region                = var.region
  log_group_arn_pattern = local.rds_log_arns
  # The final snapshot and the retained automated backups are encrypted with this key:
  # it must outlive the instance, or they could never be restored.
  prevent_destroy = var.final_snapshot
  tags            = merge(var.tags, { Name = "${var.name}-rds" })
}

moved {
  from = aws_kms_key.db
  to   = module.key.aws_kms_key.this
}

moved {
  from = aws_kms_alias.db
  to   = module.key.aws_kms_alias.this
}

resource "aws_db_subnet_group" "this" {
  name        = var.name
  description = "Private subnets of ${var.name}"
  subnet_ids  = var.subnet_ids
  tags        = var.tags
}

resource "aws_security_group" "db" {
  name        = "${var.name}-postgres"
  description = "PostgreSQL of ${var.name}: only the listed security groups may connect"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-postgres" })
}

resource "aws_vpc_security_group_ingress_rule" "postgres" {
  for_each                     = var.allowed_security_groups
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
  tags                         = var.tags
}

# Sane defaults: TLS only, SCRAM passwords, slow statements (never their parameter values)
# and lock waits logged, sessions stuck in a transaction closed, pg_stat_statements for
# the slow-query view.
#
# name_prefix, not name: with create_before_destroy a replacement (any change to family
# or description) creates the new group before deleting the old, and a fixed name made
# that create fail on the name the old group still holds.
resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-pg${local.major}-"
  family      = "postgres${local.major}"
  description = "comments-api defaults for PostgreSQL ${local.major}"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "password_encryption"
    value = "scram-sha-256"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = tostring(var.slow_query_ms)
  }
  # A statement logged for its duration comes with its bind parameters by default
  # (log_parameter_max_length -1: in full): the app's queries bind readers' email
  # addresses, author keys and comment text (psycopg 3 sends them as parameters), and they
  # would sit in CloudWatch Logs for log_retention_days, past any erasure. The statement
  # text ($1, $2 placeholders) is still logged; the values never are, on error neither.
  parameter {
    name  = "log_parameter_max_length"
    value = "0"
  }
  parameter {
    name  = "log_parameter_max_length_on_error"
    value = "0"
  }
  parameter {
    name  = "log_lock_waits"
    value = "1"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_disconnections"
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "idle_in_transaction_session_timeout"
    value = "60000"
  }
  parameter {
    name         = "shared_preload_libraries"
    value        = "pg_stat_statements"
    apply_method = "pending-reboot"
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

# Created up front so the exported logs are encrypted and expire.
resource "aws_cloudwatch_log_group" "db" {
  for_each          = toset(local.log_exports)
  name              = "${local.log_prefix}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.key.arn
  tags              = var.tags
}

resource "aws_iam_role" "monitoring" {
  name = "${var.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = var.aws_account_id } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = var.max_allocated_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = module.key.arn

  db_name                       = var.db_name
  username                      = var.master_username
  manage_master_user_password   = true
  master_user_secret_kms_key_id = module.key.arn

  multi_az               = var.multi_az
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  ca_cert_identifier     = "rds-ca-rsa2048-g1"
  parameter_group_name   = aws_db_parameter_group.this.name

  backup_retention_period = var.backup_retention_days
  backup_window           = "02:00-02:30"
  maintenance_window      = "sun:03:00-sun:04:00"
  copy_tags_to_snapshot   = true
  # Backups kept after a destroy are encrypted with module.key, so they are kept only
  # when the key is (prevent_destroy follows final_snapshot): a disposable database
  # would otherwise leave backups its own destroy makes unreadable (key pending
  # deletion) and then unrecoverable (after the 30-day window), still billed as storage.
  delete_automated_backups  = !var.final_snapshot
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = !var.final_snapshot
  final_snapshot_identifier = var.final_snapshot ? "${var.name}-final" : null

  # Minor versions follow automatically within the major engine_version names. A major
  # upgrade happens only when engine_version is changed, and RDS refuses that change
  # unless this flag is set, so it is on: false guarded nothing and failed the apply of a
  # deliberate upgrade (docs/terraform.md, section 3).
  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = true

  iam_database_authentication_enabled   = true
  performance_insights_enabled          = local.performance_insights
  performance_insights_kms_key_id       = local.performance_insights ? module.key.arn : null
  performance_insights_retention_period = local.performance_insights ? 7 : null
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
  enabled_cloudwatch_logs_exports       = local.log_exports

  tags = merge(var.tags, { Name = var.name })

  depends_on = [aws_cloudwatch_log_group.db, aws_iam_role_policy_attachment.monitoring]
}
