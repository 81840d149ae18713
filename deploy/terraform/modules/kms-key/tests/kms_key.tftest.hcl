# Offline unit tests of the kms-key module (mocked provider: no AWS call).
mock_provider "aws" {}

variables {
  alias          = "t-key"
  description    = "t: something"
  aws_account_id = "123456789012"
  tags           = { Name = "t-key" }
}

run "administered_by_the_account_and_rotated" {
  command = plan

  assert {
    condition     = aws_kms_key.this.enable_key_rotation && aws_kms_key.this.deletion_window_in_days == 30
    error_message = "the key rotates and waits 30 days before deletion"
  }
  assert {
    condition     = length(jsondecode(aws_kms_key.this.policy).Statement) == 1
    error_message = "without log groups, only the account administers the key"
  }
  assert {
    condition     = jsondecode(aws_kms_key.this.policy).Statement[0].Principal.AWS == "arn:aws:iam::123456789012:root"
    error_message = "the account's root principal administers the key"
  }
  assert {
    condition     = aws_kms_alias.this.name == "alias/t-key" && aws_kms_key.this.tags.Name == "t-key"
    error_message = "alias and tags as given"
  }
  assert {
    condition     = length(terraform_data.keep_key) == 0 && !output.prevent_destroy
    error_message = "an ordinary key goes with its stack"
  }
}

run "a_key_that_must_outlive_its_stack_is_guarded" {
  command = plan

  variables {
    prevent_destroy = true
  }

  assert {
    condition     = length(terraform_data.keep_key) == 1 && output.prevent_destroy
    error_message = "the guard (lifecycle.prevent_destroy) is planned with the key"
  }
}

run "cloudwatch_logs_only_for_the_given_groups" {
  command = plan

  variables {
    region                = "eu-west-1"
    log_group_arn_pattern = "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/t/*"
  }

  assert {
    condition     = jsondecode(aws_kms_key.this.policy).Statement[1].Principal.Service == "logs.eu-west-1.amazonaws.com"
    error_message = "the region's Logs service may use the key"
  }
  assert {
    condition = (
      jsondecode(aws_kms_key.this.policy).Statement[1].Condition.ArnLike["kms:EncryptionContext:aws:logs:arn"]
      == "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/t/*"
    )
    error_message = "only for the given log groups"
  }
}

run "a_log_group_pattern_must_be_a_logs_arn" {
  command = plan

  variables {
    log_group_arn_pattern = "*"
  }

  expect_failures = [var.log_group_arn_pattern]
}

run "rejects_an_alias_under_aws" {
  command = plan
  variables {
    alias = "aws/ebs"
  }
  expect_failures = [var.alias]
}

run "rejects_a_dot_in_the_alias" {
  command = plan
  variables {
    alias = "comments.api-rds"
  }
  expect_failures = [var.alias]
}

run "rejects_an_empty_alias" {
  command = plan
  variables {
    alias = ""
  }
  expect_failures = [var.alias]
}

# 250 characters after alias/ make KMS's 256; one more is refused.
run "accepts_a_250_character_alias" {
  command = plan
  variables {
    alias = "comments-api/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
  }
  assert {
    condition     = length(aws_kms_alias.this.name) == 256
    error_message = "alias/ plus 250 characters is KMS's 256"
  }
}

run "rejects_a_251_character_alias" {
  command = plan
  variables {
    alias = "comments-api/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
  }
  expect_failures = [var.alias]
}
