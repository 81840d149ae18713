# Production. Replace the account (123456789012 is AWS's documentation account, used by
# the offline CI plan) and the repository with yours.
aws_account_id     = "123456789012"
github_repository  = "example/comments-api"
region             = "eu-west-1"
availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
vpc_cidr           = "10.50.0.0/16"

kubernetes_version = "1.32"
# Private API endpoint: deploy from inside the VPC (self-hosted runner) or list your
# runners' / VPN egress ranges here.
cluster_api_public_cidrs = []
node_instance_types      = ["m6i.large"]
nodes_per_zone           = { min = 1, desired = 1, max = 3 }

db_instance_class        = "db.m6g.large"
db_backup_retention_days = 14

# The namespace of deploy/k8s/overlays/production; the CI role may deploy only there.
app_namespace = "comments-production"
