output "state_bucket" {
  description = "Put this in each environment's backend.hcl as `bucket`."
  value       = module.state.bucket
}

output "state_kms_key_arn" {
  description = "Put this in each environment's backend.hcl as `kms_key_id`."
  value       = module.state.kms_key_arn
}

output "github_oidc_provider_arn" {
  description = "The GitHub Actions OIDC provider the CI roles trust (null when it existed already)."
  value       = try(aws_iam_openid_connect_provider.github[0].arn, null)
}
