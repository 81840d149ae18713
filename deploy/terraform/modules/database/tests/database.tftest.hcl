# Offline unit tests of the database module (mocked provider: no AWS call).
mock_provider "aws" {
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mock" }
  }
  mock_resource "aws_db_instance" {
    defaults = {
      address            = "t-db.abc.eu-west-1.rds.amazonaws.com"
      port               = 5432
      master_user_secret = [{ secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-mock", kms_key_id = "mock", secret_status = "active" }]
    }
  }
}

variables {
  name                    = "t-db"
  aws_account_id          = "123456789012"
  region                  = "eu-west-1"
  vpc_id                  = "vpc-0123456789abcdef0"
  subnet_ids              = ["subnet-aaaa", "subnet-bbbb", "subnet-cccc"]
  allowed_security_groups = { eks = "sg-0123456789abcdef0" }
  tags                    = { Project = "comments-api", Environment = "test" }
}

run "production_defaults" {
  command = plan

  assert {
    condition     = aws_db_instance.this.multi_az && aws_db_instance.this.storage_encrypted && aws_db_instance.this.engine == "postgres"
    error_message = "Multi-AZ, encrypted PostgreSQL"
  }
  assert {
    condition     = aws_db_instance.this.deletion_protection && !aws_db_instance.this.skip_final_snapshot && aws_db_instance.this.final_snapshot_identifier == "t-db-final"
    error_message = "deletion protection and a final snapshot by default"
  }
  assert {
    condition     = module.key.prevent_destroy
    error_message = "the key of the final snapshot and the retained backups outlives the instance: a destroy that would schedule its deletion is refused"
  }
  assert {
    condition     = !aws_db_instance.this.delete_automated_backups
    error_message = "the automated backups are kept after a destroy, with their key"
  }
  assert {
    condition     = aws_db_instance.this.manage_master_user_password && aws_db_instance.this.password == null
    error_message = "RDS generates and keeps the password; Terraform never holds it"
  }
  assert {
    condition     = !aws_db_instance.this.publicly_accessible && aws_db_instance.this.backup_retention_period == 7
    error_message = "private, with a week of backups"
  }
  assert {
    condition     = [for p in aws_db_parameter_group.this.parameter : p.value if p.name == "rds.force_ssl"] == ["1"]
    error_message = "TLS enforced by the parameter group"
  }
  assert {
    condition     = [for p in aws_db_parameter_group.this.parameter : p.value if p.name == "log_parameter_max_length"] == ["0"] && [for p in aws_db_parameter_group.this.parameter : p.value if p.name == "log_parameter_max_length_on_error"] == ["0"]
    error_message = "slow statements are logged without their bind parameters (PostgreSQL's default logs them in full: readers' addresses and comment text in CloudWatch Logs)"
  }
  assert {
    condition     = [for p in aws_db_parameter_group.this.parameter : p.value if p.name == "log_min_duration_statement"] == ["500"]
    error_message = "statements slower than slow_query_ms are logged"
  }
  assert {
    condition     = aws_db_parameter_group.this.family == "postgres16"
    error_message = "parameter family follows the engine major"
  }
  assert {
    condition     = aws_db_instance.this.engine_version == "16" && aws_db_instance.this.auto_minor_version_upgrade && aws_db_instance.this.allow_major_version_upgrade
    error_message = "minor upgrades within the pinned major are automatic; a change of engine_version to another major is allowed (RDS refuses it without allow_major_version_upgrade)"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.postgres["eks"].from_port == 5432 && aws_vpc_security_group_ingress_rule.postgres["eks"].referenced_security_group_id == "sg-0123456789abcdef0" && aws_vpc_security_group_ingress_rule.postgres["eks"].cidr_ipv4 == null
    error_message = "only the cluster's security group reaches the port, no CIDR"
  }
}

run "disposable_staging" {
  command = plan
  variables {
    deletion_protection = false
    final_snapshot      = false
  }

  assert {
    condition     = !aws_db_instance.this.deletion_protection && aws_db_instance.this.skip_final_snapshot && aws_db_instance.this.final_snapshot_identifier == null
    error_message = "staging can be torn down"
  }
  assert {
    condition     = !module.key.prevent_destroy
    error_message = "without a final snapshot the key goes with the instance"
  }
  assert {
    condition     = aws_db_instance.this.delete_automated_backups
    error_message = "the automated backups go with the instance too: kept, they would be encrypted under a key the same destroy schedules for deletion, unreadable once it is pending deletion and lost after its 30-day window"
  }
}

run "secret_arn_out_no_password_out" {
  command = apply
  # With a final snapshot the key's guard refuses the test's own clean-up destroy.
  variables {
    final_snapshot = false
  }

  assert {
    condition     = output.master_user_secret_arn == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-mock"
    error_message = "the managed secret's ARN is the output"
  }
  assert {
    condition     = output.database_url_template == "postgresql+psycopg://{{ .username | urlquery }}:{{ .password | urlquery }}@t-db.abc.eu-west-1.rds.amazonaws.com:5432/comments?sslmode=verify-full&sslrootcert=/etc/rds-ca/rds-ca-bundle.pem"
    error_message = "DATABASE_URL template for External Secrets: TLS verifying the server against the RDS CA bundle components/database-rds mounts at /etc/rds-ca/"
  }
}

# RDS for PostgreSQL 13 left standard support on 2026-02-28: a new instance of it runs
# under RDS Extended Support (the default engine_lifecycle_support), billed per vCPU-hour
# on top of the instance, which nothing in the plan shows.
run "rejects_postgresql_13" {
  command = plan
  variables {
    engine_version = "13"
  }
  expect_failures = [var.engine_version]
}

run "accepts_postgresql_14_to_18" {
  command = plan
  variables {
    engine_version = "17.7"
  }
  assert {
    condition     = aws_db_parameter_group.this.family == "postgres17" && aws_db_instance.this.engine_version == "17.7"
    error_message = "a major.minor version is passed through, its parameter group family following the major"
  }
}

run "rejects_no_backups" {
  command = plan
  variables {
    backup_retention_days = 0
  }
  expect_failures = [var.backup_retention_days]
}

run "rejects_reserved_user" {
  command = plan
  variables {
    master_username = "rdsadmin"
  }
  expect_failures = [var.master_username]
}

run "rejects_cidr_instead_of_security_group" {
  command = plan
  variables {
    allowed_security_groups = { office = "10.0.0.0/8" }
  }
  expect_failures = [var.allowed_security_groups]
}

run "rejects_a_storage_ceiling_below_the_allocation" {
  command = plan
  variables {
    allocated_storage_gb     = 100
    max_allocated_storage_gb = 50
  }
  expect_failures = [var.max_allocated_storage_gb]
}

run "rejects_a_storage_ceiling_within_ten_percent" {
  command = plan
  variables {
    allocated_storage_gb     = 100
    max_allocated_storage_gb = 105
  }
  expect_failures = [var.max_allocated_storage_gb]
}

run "rejects_the_same_subnet_twice" {
  command = plan
  variables {
    subnet_ids = ["subnet-aaaa", "subnet-aaaa"]
  }
  expect_failures = [var.subnet_ids]
}

run "rejects_admin_as_master_user" {
  command = plan
  variables {
    master_username = "admin"
  }
  expect_failures = [var.master_username]
}

run "accepts_postgres_as_master_user" {
  command = plan
  variables {
    master_username = "postgres"
  }
}

run "accepts_a_63_character_master_user" {
  command = plan
  variables {
    master_username = "a_master_user_name_of_sixty_three_characters_which_is_pg_limit1"
  }
  assert {
    condition     = length(aws_db_instance.this.username) == 63
    error_message = "PostgreSQL allows 63 characters"
  }
}

run "rejects_a_64_character_master_user" {
  command = plan
  variables {
    master_username = "a_master_user_name_of_sixty_four_characters_one_past_the_pg_max1"
  }
  expect_failures = [var.master_username]
}

# comments-api-staging-eu-west-1-blue-green-test-db (49): the monitoring role
# <name>-rds-monitoring is exactly IAM's 64.
run "accepts_a_49_character_name" {
  command = plan
  variables {
    name = "comments-api-staging-eu-west-1-blue-green-test-db"
  }
  assert {
    condition     = length(aws_iam_role.monitoring.name) == 64
    error_message = "the monitoring role name is at IAM's limit"
  }
}

run "rejects_a_50_character_name" {
  command = plan
  variables {
    name = "comments-api-staging-eu-west-1-blue-green-test-db2"
  }
  expect_failures = [var.name]
}

run "rejects_a_name_ending_in_a_dash" {
  command = plan
  variables {
    name = "comments-api-"
  }
  expect_failures = [var.name]
}

run "rejects_two_dashes_in_a_row" {
  command = plan
  variables {
    name = "comments--api"
  }
  expect_failures = [var.name]
}

# The parameter group is create_before_destroy: a replacement (new family or description)
# creates the new group while the old one still exists, so a fixed name collided with it
# and the apply failed. RDS picks a unique name from the prefix.
run "parameter_group_can_be_replaced_before_it_is_destroyed" {
  command = plan

  assert {
    condition     = aws_db_parameter_group.this.name_prefix == "t-db-pg16-"
    error_message = "the parameter group is named from a prefix, so its create_before_destroy replacement does not collide with the old group's name"
  }
}

# RDS refuses Performance Insights on db.t2/t3/t4g micro and small: the create failed.
run "no_performance_insights_on_small_classes" {
  command = plan
  variables {
    instance_class = "db.t4g.small"
  }

  assert {
    condition     = !aws_db_instance.this.performance_insights_enabled
    error_message = "Performance Insights is off on a class that does not support it"
  }
}

run "performance_insights_on_supported_classes" {
  command = plan
  variables {
    instance_class = "db.t4g.medium"
  }

  assert {
    condition     = aws_db_instance.this.performance_insights_enabled && aws_db_instance.this.performance_insights_retention_period == 7
    error_message = "Performance Insights stays on (7 days, the free tier) where RDS supports it"
  }
}
