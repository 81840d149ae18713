# The environment roots re-export these under the same names (docs/terraform.md).

output "name" {
  description = "Name prefix of the environment's resources (comments-api-<environment>)."
  value       = local.name
}

output "tags" {
  description = "Tags every resource of the environment carries (the roots' provider default_tags)."
  value       = local.tags
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = module.cluster.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API URL."
  value       = module.cluster.cluster_endpoint
}

output "kubeconfig_command" {
  description = "Command that writes the kubeconfig entry for this cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.cluster.cluster_name} --alias ${local.name}"
}

output "app_namespace" {
  description = "Namespace the CI role may deploy to."
  value       = var.app_namespace
}

output "image_repository_url" {
  description = "URL of the registry this environment pushes to (var.repository)."
  value       = module.registries.repository_urls[var.repository.name]
}

output "pull_repository_urls" {
  description = "URLs of the registries the CI role may only read (var.pull_repository_names, same order)."
  value       = local.pull_repository_urls
}

output "database_address" {
  description = "RDS PostgreSQL host name (Multi-AZ; follows failovers)."
  value       = module.database.address
}

output "database_port" {
  description = "RDS PostgreSQL port."
  value       = module.database.port
}

output "database_name" {
  description = "Database name."
  value       = module.database.db_name
}

output "database_subnet_cidrs" {
  description = "Private subnet ranges the database lives in."
  value       = module.network.private_subnet_cidrs
}

output "database_secret_arn" {
  description = "Secrets Manager ARN of the RDS-managed credentials."
  value       = module.database.master_user_secret_arn
}

output "database_url_template" {
  description = "ExternalSecret template producing DATABASE_URL from that secret."
  value       = module.database.database_url_template
}

output "secrets_reader_role_arn" {
  description = "IRSA role of the service account comments-api-secrets."
  value       = module.secrets_reader.role_arn
}

output "ci_role_arn" {
  description = "Role the environment's GitHub Actions jobs assume; with separate_deploy_role only the jobs that push."
  value       = module.ci.role_arn
}

output "ci_trusted_subjects" {
  description = "OIDC subjects the CI role (ci_role_arn) accepts; with separate_deploy_role only ci_push_environment's."
  value       = module.ci.trusted_subjects
}

output "ci_deploy_role_arn" {
  description = "Role for the jobs that only pull, read scan findings or deploy (the environment's and github_branches' subjects): no push right. Null without separate_deploy_role."
  value       = var.separate_deploy_role ? module.ci_deploy[0].role_arn : null
}

output "ci_deploy_trusted_subjects" {
  description = "OIDC subjects the deploy role (ci_deploy_role_arn) accepts. Null without separate_deploy_role."
  value       = var.separate_deploy_role ? module.ci_deploy[0].trusted_subjects : null
}

output "ci_rbac_group" {
  description = "Kubernetes group of the EKS access entry of the role that deploys (ci_deploy_role_arn with separate_deploy_role, else ci_role_arn): the group deploy/k8s/cluster-rbac must bind."
  value       = var.separate_deploy_role ? module.ci_deploy[0].rbac_group : module.ci.rbac_group
}

output "vpc_id" {
  description = "VPC of the cluster."
  value       = module.network.vpc_id
}

output "aws_load_balancer_controller_values" {
  description = "Helm values of the AWS Load Balancer Controller (chart eks/aws-load-balancer-controller) that only this Terraform knows: the nodes' IMDSv2 hop limit of 1 keeps the controller from reading region and VPC from the instance metadata; with its role (load_balancer_controller_policy_json), serviceAccount.name and the annotation eks.amazonaws.com/role-arn."
  # With the controller's role, its service account too, so `helm install -f` needs no
  # --set; the condition is the input, known at plan time, not the role's ARN.
  value = merge(
    {
      clusterName = module.cluster.cluster_name
      region      = var.region
      vpcId       = module.network.vpc_id
    },
    var.load_balancer_controller_policy_json == "" ? {} : {
      serviceAccount = {
        name        = module.cluster.load_balancer_controller_service_account
        annotations = { "eks.amazonaws.com/role-arn" = module.cluster.load_balancer_controller_role_arn }
      }
    },
  )
}

output "load_balancer_controller_role_arn" {
  description = "IRSA role of the AWS Load Balancer Controller (also in aws_load_balancer_controller_values); null without load_balancer_controller_policy_json."
  value       = module.cluster.load_balancer_controller_role_arn
}
