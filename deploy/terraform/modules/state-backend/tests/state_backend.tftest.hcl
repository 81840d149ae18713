# Offline unit tests of the state backend module (mocked provider: no AWS call).
mock_provider "aws" {
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/mock" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::mock-bucket" }
  }
}

variables {
  bucket_name    = "comments-api-tfstate-123456789012"
  aws_account_id = "123456789012"
}

run "versioned_encrypted_private" {
  command = plan

  assert {
    condition     = alltrue([for v in aws_s3_bucket_versioning.this : v.versioning_configuration[0].status == "Enabled"])
    error_message = "versioned"
  }
  assert {
    condition     = one(aws_s3_bucket_server_side_encryption_configuration.state.rule).apply_server_side_encryption_by_default[0].sse_algorithm == "aws:kms"
    error_message = "state encrypted with KMS"
  }
  assert {
    condition     = alltrue([for b in aws_s3_bucket_public_access_block.this : b.block_public_acls && b.block_public_policy && b.ignore_public_acls && b.restrict_public_buckets])
    error_message = "never public"
  }
  assert {
    condition     = module.key.alias == "alias/${var.bucket_name}"
    error_message = "the state key comes from the kms-key module (rotation: its own tests)"
  }
  assert {
    condition     = module.key.prevent_destroy
    error_message = "like the bucket, the key every state object is encrypted with is never destroyed"
  }
}

run "tls_only" {
  command = plan

  assert {
    condition     = jsondecode(aws_s3_bucket_policy.state.policy).Statement[0].Effect == "Deny" && jsondecode(aws_s3_bucket_policy.state.policy).Statement[0].Condition.Bool["aws:SecureTransport"] == "false"
    error_message = "plain HTTP denied"
  }
  assert {
    condition     = jsondecode(aws_s3_bucket_policy.state.policy).Statement[0].Resource == ["arn:aws:s3:::comments-api-tfstate-123456789012", "arn:aws:s3:::comments-api-tfstate-123456789012/*"]
    error_message = "the policy covers the bucket and its objects"
  }
}

run "rejects_bad_bucket_name" {
  command = plan
  variables {
    bucket_name = "Comments_API"
  }
  expect_failures = [var.bucket_name]
}

run "rejects_a_dotted_bucket_name" {
  command = plan
  variables {
    bucket_name = "comments.api.tfstate"
  }
  expect_failures = [var.bucket_name]
}

run "rejects_a_reserved_prefix" {
  command = plan
  variables {
    bucket_name = "xn--tfstate-123456789012"
  }
  expect_failures = [var.bucket_name]
}

run "rejects_the_sthree_prefix" {
  command = plan
  variables {
    bucket_name = "sthree-tfstate-123456789012"
  }
  expect_failures = [var.bucket_name]
}

run "rejects_the_demo_prefix" {
  command = plan
  variables {
    bucket_name = "amzn-s3-demo-tfstate"
  }
  expect_failures = [var.bucket_name]
}

run "rejects_an_access_point_alias_suffix" {
  command = plan
  variables {
    bucket_name = "comments-api-tfstate-s3alias"
  }
  expect_failures = [var.bucket_name]
}

run "rejects_a_directory_bucket_suffix" {
  command = plan
  variables {
    bucket_name = "comments-api-tfstate--x-s3"
  }
  expect_failures = [var.bucket_name]
}

run "rejects_an_object_lambda_suffix" {
  command = plan
  variables {
    bucket_name = "comments-api-tfstate--ol-s3"
  }
  expect_failures = [var.bucket_name]
}

run "rejects_a_table_bucket_suffix" {
  command = plan
  variables {
    bucket_name = "comments-api-tfstate--table-s3"
  }
  expect_failures = [var.bucket_name]
}

# Only the state bucket's own suffix is reserved; "s3alias" elsewhere is fine.
run "accepts_a_reserved_word_inside_the_name" {
  command = plan
  variables {
    bucket_name = "s3alias-xn-tfstate"
  }
  assert {
    condition     = aws_s3_bucket.logs.bucket == "s3alias-xn-tfstate-logs"
    error_message = "the log bucket appends -logs"
  }
}
