output "role_arn" {
  description = "ARN to put in the workflow's aws-actions/configure-aws-credentials `role-to-assume` (the GitHub environment's AWS_ROLE_ARN variable)."
  value       = aws_iam_role.ci.arn
}

output "role_name" {
  description = "Name of the CI role."
  value       = aws_iam_role.ci.name
}

output "trusted_subjects" {
  description = "Exact OIDC token subjects the role trusts."
  value       = local.subjects
}

output "policy" {
  description = "The role's inline policy (JSON): what its jobs may do with ECR and EKS."
  value       = aws_iam_role_policy.ci.policy
}

output "deploy_cluster_name" {
  description = "EKS cluster whose namespaces the role may deploy to (access entry), or null."
  value       = try(var.deploy_cluster.name, null)
}

output "rbac_group" {
  description = "Kubernetes group of the role's deploy access entry (the cluster-rbac bindings' subject), or null without deploy_cluster."
  value       = var.deploy_cluster != null ? var.kubernetes_group : null
}
