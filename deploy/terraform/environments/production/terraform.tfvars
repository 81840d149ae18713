# Production. Replace the account (123456789012 is AWS's documentation account, used by
# the offline CI plan) and the repository with yours; production's own sizes and ranges
# are in main.tf.
aws_account_id     = "123456789012"
github_repository  = "example/comments-api"
region             = "eu-west-1"
availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

# Private API endpoint: deploy from inside the VPC (self-hosted runner) or list your
# runners' / VPN egress ranges here.
cluster_api_public_cidrs = []

# Cluster-admin through EKS access entries (required: the cluster grants the role running
# the apply nothing). Replace with your operators' role, the one `terraform apply` and
# kubectl run as.
admin_role_arns = ["arn:aws:iam::123456789012:role/comments-api-admin"]
