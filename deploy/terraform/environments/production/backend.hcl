# terraform init -backend-config=backend.hcl  (bucket and key from the bootstrap outputs)
bucket       = "comments-api-tfstate-123456789012"
key          = "production/terraform.tfstate"
region       = "eu-west-1"
encrypt      = true
use_lockfile = true
# Required (bootstrap output state_kms_key_arn): the state bucket refuses writes that name
# no key, and `encrypt` alone names AES256 (docs/terraform.md, section 1).
# kms_key_id = "<bootstrap output state_kms_key_arn>"
