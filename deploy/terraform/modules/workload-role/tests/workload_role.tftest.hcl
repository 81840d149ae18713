# Offline unit tests of the service-account role module (mocked provider: no AWS call).
mock_provider "aws" {}

variables {
  name              = "t-secrets-reader"
  oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC"
  oidc_issuer_url   = "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC"
  namespace         = "comments-api"
  service_account   = "comments-api-secrets"
  secret_arns       = ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-x"]
  kms_key_arns      = ["arn:aws:kms:eu-west-1:123456789012:key/x"]
}

run "bound_to_one_service_account" {
  command = plan

  assert {
    condition     = jsondecode(aws_iam_role.this.assume_role_policy).Statement[0].Condition.StringEquals["oidc.eks.eu-west-1.amazonaws.com/id/ABC:sub"] == "system:serviceaccount:comments-api:comments-api-secrets"
    error_message = "only the named service account"
  }
  assert {
    condition     = jsonencode(jsondecode(aws_iam_role_policy.this.policy).Statement[0].Resource) == jsonencode(var.secret_arns)
    error_message = "only the listed secrets"
  }
}

run "rejects_a_wildcard_secret" {
  command = plan
  variables {
    secret_arns = ["*"]
  }
  expect_failures = [var.secret_arns]
}

run "rejects_every_secret_of_the_account" {
  command = plan
  variables {
    secret_arns = ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:*"]
  }
  expect_failures = [var.secret_arns]
}

run "rejects_every_key_of_the_account" {
  command = plan
  variables {
    kms_key_arns = ["arn:aws:kms:eu-west-1:123456789012:key/*"]
  }
  expect_failures = [var.kms_key_arns]
}

run "accepts_a_secret_named_without_its_random_suffix" {
  command = plan
  variables {
    secret_arns = ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:comments-api/db-??????"]
  }
}
