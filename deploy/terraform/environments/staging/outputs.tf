# What the Kubernetes staging overlay (deploy/k8s/overlays/staging) and the pipeline
# need; `terraform output -json` hands them over (docs/terraform.md).

output "region" {
  description = "AWS region of the environment."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name: `aws eks update-kubeconfig --region <region> --name <this>`."
  value       = module.platform.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API URL."
  value       = module.platform.cluster_endpoint
}

output "kubeconfig_command" {
  description = "Command that writes the kubeconfig entry for this cluster."
  value       = module.platform.kubeconfig_command
}

output "app_namespace" {
  description = "Namespace the CI role may deploy to."
  value       = module.platform.app_namespace
}

output "image_repository_url" {
  description = "Dev registry (ECR) URL: CI pushes each build here, staging runs it by digest (image: <this>@sha256:...)."
  value       = module.platform.image_repository_url
}

output "database_address" {
  description = "RDS PostgreSQL host name (Multi-AZ; follows failovers)."
  value       = module.platform.database_address
}

output "database_port" {
  description = "RDS PostgreSQL port."
  value       = module.platform.database_port
}

output "database_name" {
  description = "Database name."
  value       = module.platform.database_name
}

output "database_subnet_cidrs" {
  description = "Private subnet ranges the database lives in: database-cidr-a/b/c of the Kubernetes database-rds parameters (NetworkPolicy egress to port 5432)."
  value       = module.platform.database_subnet_cidrs
}

output "database_secret_arn" {
  description = "Secrets Manager ARN of the RDS-managed credentials (JSON username/password): the ExternalSecret's remoteRef.key for DATABASE_URL."
  value       = module.platform.database_secret_arn
}

output "database_url_template" {
  description = "ExternalSecret template producing DATABASE_URL from that secret."
  value       = module.platform.database_url_template
}

output "secrets_reader_role_arn" {
  description = "IRSA role of the service account comments-api-secrets (the SecretStore's auth): eks.amazonaws.com/role-arn annotation."
  value       = module.platform.secrets_reader_role_arn
}

output "ci_role_arn" {
  description = "Role the dev.yml jobs that push to the dev registry assume (build, sign, in the dev-push GitHub environment): repository variable DEV_ROLE_ARN. No deploy right."
  value       = module.platform.ci_role_arn
}

output "ci_deploy_role_arn" {
  description = "Role for the jobs that only pull, read scan findings or deploy (dev.yml e2e and scan; a staging Environment deploy job): DEV_DEPLOY_ROLE_ARN, and AWS_ROLE_ARN of the staging environment. Cannot push."
  value       = module.platform.ci_deploy_role_arn
}

output "ci_trusted_subjects" {
  description = "OIDC subjects the push role (ci_role_arn) accepts: the dev-push environment's only."
  value       = module.platform.ci_trusted_subjects
}

output "ci_deploy_trusted_subjects" {
  description = "OIDC subjects the deploy role (ci_deploy_role_arn) accepts: the dev branch and the staging environment."
  value       = module.platform.ci_deploy_trusted_subjects
}

output "ci_rbac_group" {
  description = "Kubernetes group the deploying CI role's EKS access entry carries: must be the group deploy/k8s/cluster-rbac binds (section 5 of docs/terraform.md)."
  value       = module.platform.ci_rbac_group
}

output "vpc_id" {
  description = "VPC of the cluster."
  value       = module.platform.vpc_id
}

output "aws_load_balancer_controller_values" {
  description = "Helm values (clusterName, region, vpcId; with the controller's role its serviceAccount name and role-arn annotation) for the AWS Load Balancer Controller: `terraform output -json aws_load_balancer_controller_values > lbc-values.json`, then `helm install ... -f lbc-values.json`."
  value       = module.platform.aws_load_balancer_controller_values
}

output "load_balancer_controller_role_arn" {
  description = "IRSA role of the AWS Load Balancer Controller; null until load_balancer_controller_policy_json is given."
  value       = module.platform.load_balancer_controller_role_arn
}
