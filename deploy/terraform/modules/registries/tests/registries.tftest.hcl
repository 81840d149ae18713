# Offline unit tests of the registries module (mocked provider: no AWS call).
mock_provider "aws" {
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/mock" }
  }
}

variables {
  name           = "t-ecr"
  aws_account_id = "123456789012"
  repositories = {
    "comments-api/dev"  = { keep_images = 50 }
    "comments-api/prod" = { keep_images = 200, untagged_days = 14 }
  }
}

run "immutable_scanned_encrypted" {
  command = plan

  assert {
    condition     = alltrue([for r in aws_ecr_repository.this : r.image_tag_mutability == "IMMUTABLE"])
    error_message = "tags are immutable"
  }
  assert {
    condition     = alltrue([for r in aws_ecr_repository.this : r.image_scanning_configuration[0].scan_on_push])
    error_message = "every push is scanned"
  }
  assert {
    condition     = alltrue([for r in aws_ecr_repository.this : r.encryption_configuration[0].encryption_type == "KMS"])
    error_message = "images are encrypted with the customer key"
  }
  assert {
    condition     = jsondecode(aws_ecr_lifecycle_policy.this["comments-api/prod"].policy).rules[1].selection.countNumber == 200
    error_message = "prod keeps its rollback depth"
  }
  assert {
    condition     = jsondecode(aws_ecr_lifecycle_policy.this["comments-api/dev"].policy).rules[0].selection.countNumber == 7
    error_message = "untagged images expire after a week by default"
  }
}

run "rejects_shallow_rollback" {
  command = plan
  variables {
    repositories = { "comments-api/prod" = { keep_images = 2 } }
  }
  expect_failures = [var.repositories]
}

run "rejects_fractional_lifecycle_counts" {
  command = plan
  variables {
    repositories = { "comments-api/dev" = { keep_images = 50, untagged_days = 1.5 } }
  }
  expect_failures = [var.repositories]
}

run "rejects_a_one_character_name" {
  command = plan
  variables {
    repositories = { "a" = { keep_images = 50 } }
  }
  expect_failures = [var.repositories]
}

# comments-api/ (13) + 244 = 257 characters.
run "rejects_a_257_character_name" {
  command = plan
  variables {
    repositories = { (format("comments-api/%s", join("", [for i in range(244) : "r"]))) = { keep_images = 50 } }
  }
  expect_failures = [var.repositories]
}

run "accepts_two_and_256_character_names" {
  command = plan
  variables {
    repositories = {
      "ab"                                                               = { keep_images = 50 }
      (format("comments-api/%s", join("", [for i in range(243) : "r"]))) = { keep_images = 50 }
    }
  }
  assert {
    condition     = min([for r in aws_ecr_repository.this : length(r.name)]...) == 2 && max([for r in aws_ecr_repository.this : length(r.name)]...) == 256
    error_message = "2 and 256 characters are ECR's bounds"
  }
}
