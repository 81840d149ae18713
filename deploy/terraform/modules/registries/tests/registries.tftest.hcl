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
    "comments-api/dev"  = { keep_images = 400 }
    "comments-api/prod" = { keep_images = 800 }
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
}

# Every untagged manifest here belongs to a tagged image (index children, the cosign
# signature referrer): no rule may expire one by age while its image stays, or a
# signature would vanish days after signing. Only the count rule, over every manifest.
run "signatures_live_as_long_as_their_images" {
  command = plan

  assert {
    condition = alltrue([for r in aws_ecr_lifecycle_policy.this : alltrue([
      for rule in jsondecode(r.policy).rules : rule.selection.tagStatus == "any" && rule.selection.countType == "imageCountMoreThan"
    ])])
    error_message = "no rule selects untagged manifests or counts days: only the newest-N count over every manifest"
  }
  assert {
    condition     = alltrue([for r in aws_ecr_lifecycle_policy.this : length(jsondecode(r.policy).rules) == 1])
    error_message = "one rule per repository"
  }
  assert {
    condition     = jsondecode(aws_ecr_lifecycle_policy.this["comments-api/prod"].policy).rules[0].selection.countNumber == 800
    error_message = "prod keeps its keep_images manifests"
  }
  assert {
    condition     = strcontains(jsondecode(aws_ecr_lifecycle_policy.this["comments-api/dev"].policy).rules[0].description, "400 manifests: 100 releases of up to 4")
    error_message = "the rule's description states the releases kept if ECR counts 4 manifests a release"
  }
}

run "rejects_shallow_rollback" {
  command = plan
  variables {
    repositories = { "comments-api/prod" = { keep_images = 2 } }
  }
  expect_failures = [var.repositories]
}

# 39 manifests could be 9 releases of 4 (index, image, attestation, signature).
run "rejects_fewer_than_ten_releases_of_four_manifests" {
  command = plan
  variables {
    repositories = { "comments-api/prod" = { keep_images = 39 } }
  }
  expect_failures = [var.repositories]
}

run "accepts_ten_releases_of_four_manifests" {
  command = plan
  variables {
    repositories = { "comments-api/prod" = { keep_images = 40 } }
  }
  assert {
    condition     = jsondecode(aws_ecr_lifecycle_policy.this["comments-api/prod"].policy).rules[0].selection.countNumber == 40
    error_message = "40 is the smallest depth accepted"
  }
}

run "rejects_a_fractional_lifecycle_count" {
  command = plan
  variables {
    repositories = { "comments-api/dev" = { keep_images = 50.5 } }
  }
  expect_failures = [var.repositories]
}

run "rejects_a_one_character_name" {
  command = plan
  variables {
    repositories = { "a" = { keep_images = 400 } }
  }
  expect_failures = [var.repositories]
}

# comments-api/ (13) + 244 = 257 characters.
run "rejects_a_257_character_name" {
  command = plan
  variables {
    repositories = { (format("comments-api/%s", join("", [for i in range(244) : "r"]))) = { keep_images = 400 } }
  }
  expect_failures = [var.repositories]
}

run "accepts_two_and_256_character_names" {
  command = plan
  variables {
    repositories = {
      "ab"                                                               = { keep_images = 400 }
      (format("comments-api/%s", join("", [for i in range(243) : "r"]))) = { keep_images = 400 }
    }
  }
  assert {
    condition     = min([for r in aws_ecr_repository.this : length(r.name)]...) == 2 && max([for r in aws_ecr_repository.this : length(r.name)]...) == 256
    error_message = "2 and 256 characters are ECR's bounds"
  }
}
