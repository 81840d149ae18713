# Staging. Replace the account (123456789012 is AWS's documentation account, used by the
# offline CI plan) and the repository with yours.
aws_account_id     = "123456789012"
github_repository  = "example/comments-api"
region             = "eu-west-1"
availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
vpc_cidr           = "10.40.0.0/16"

kubernetes_version = "1.32"
# GitHub-hosted runners deploy staging over the internet; narrow this to your runners'
# egress or a VPN range (203.0.113.0/24 is a documentation range).
cluster_api_public_cidrs = ["203.0.113.0/24"]
node_instance_types      = ["t3.large"]
nodes_per_zone           = { min = 1, desired = 1, max = 2 }

db_instance_class        = "db.t4g.medium"
db_backup_retention_days = 7

# The namespace of deploy/k8s/overlays/staging; the CI role may deploy only there.
app_namespace = "comments-staging"
