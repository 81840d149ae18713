# terraform init -backend-config=backend.hcl  (bucket and key from the bootstrap outputs)
bucket       = "comments-api-tfstate-123456789012"
key          = "production/terraform.tfstate"
region       = "eu-west-1"
encrypt      = true
use_lockfile = true
# kms_key_id = "<bootstrap output state_kms_key_arn>"
