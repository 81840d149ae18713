# Offline unit tests of the EKS module (mocked provider: no AWS call).
mock_provider "aws" {
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/mock" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mock" }
  }
  mock_resource "aws_eks_cluster" {
    defaults = {
      arn                   = "arn:aws:eks:eu-west-1:123456789012:cluster/t-eks"
      certificate_authority = [{ data = "bW9jaw==" }]
      identity = [{
        oidc = [{ issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF" }]
      }]
    }
  }
  mock_resource "aws_iam_policy" {
    defaults = { arn = "arn:aws:iam::123456789012:policy/mock" }
  }
  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF"
    }
  }
}

variables {
  name           = "t-eks"
  aws_account_id = "123456789012"
  region         = "eu-west-1"
  vpc_id         = "vpc-0123456789abcdef0"
  subnet_ids_by_zone = {
    "eu-west-1a" = "subnet-aaaa"
    "eu-west-1b" = "subnet-bbbb"
    "eu-west-1c" = "subnet-cccc"
  }
  tags = { Project = "comments-api", Environment = "test" }
}

run "one_node_group_per_zone_at_least_three_nodes" {
  command = plan

  assert {
    condition     = toset(keys(aws_eks_node_group.zone)) == toset(["eu-west-1a", "eu-west-1b", "eu-west-1c"])
    error_message = "a node group in each zone"
  }
  assert {
    condition     = alltrue([for az, ng in aws_eks_node_group.zone : ng.subnet_ids == toset([var.subnet_ids_by_zone[az]])])
    error_message = "each node group sits in its own zone's subnet only"
  }
  assert {
    condition     = sum([for ng in aws_eks_node_group.zone : ng.scaling_config[0].min_size]) >= 3
    error_message = "at least three nodes at the minimum"
  }
  assert {
    condition     = alltrue([for ng in aws_eks_node_group.zone : ng.update_config[0].max_unavailable == 1])
    error_message = "node upgrades replace one node at a time"
  }
}

# A node group without `version` is created at the cluster's version and then stays
# there: the provider detects no drift for an unset version, so raising kubernetes_version
# upgraded the control plane alone and left every node on the old kubelet. Applied
# (mocked) rather than planned: unset, the version is whatever the API answers.
run "node_groups_follow_the_control_plane_version" {
  command = apply
  variables {
    kubernetes_version = "1.36"
  }

  assert {
    condition     = aws_eks_cluster.this.version == "1.36"
    error_message = "the control plane runs kubernetes_version"
  }
  assert {
    condition     = alltrue([for ng in aws_eks_node_group.zone : ng.version == "1.36"])
    error_message = "every node group runs the control plane's version, so an upgrade of kubernetes_version rolls the nodes after the control plane"
  }
}

run "private_api_encrypted_secrets_all_logs" {
  command = plan

  assert {
    condition     = aws_eks_cluster.this.vpc_config[0].endpoint_private_access && !aws_eks_cluster.this.vpc_config[0].endpoint_public_access
    error_message = "the API endpoint is private unless CIDRs are listed"
  }
  assert {
    condition     = aws_eks_cluster.this.encryption_config[0].resources == toset(["secrets"])
    error_message = "Kubernetes secrets are envelope-encrypted"
  }
  assert {
    condition     = length(aws_eks_cluster.this.enabled_cluster_log_types) == 5
    error_message = "every control-plane log type is on"
  }
  assert {
    condition     = aws_eks_cluster.this.access_config[0].authentication_mode == "API" && !aws_eks_cluster.this.access_config[0].bootstrap_cluster_creator_admin_permissions
    error_message = "access entries only, no hidden creator admin"
  }
  assert {
    condition     = aws_launch_template.node.metadata_options[0].http_tokens == "required" && aws_launch_template.node.metadata_options[0].http_put_response_hop_limit == 1
    error_message = "nodes require IMDSv2 and pods cannot reach it"
  }
  assert {
    condition     = aws_launch_template.node.block_device_mappings[0].ebs[0].encrypted == "true"
    error_message = "node volumes are encrypted"
  }
  assert {
    condition     = module.key.alias == "alias/${var.name}-eks"
    error_message = "the secrets key comes from the kms-key module (rotation: its own tests)"
  }
}

run "public_api_only_for_listed_cidrs" {
  command = plan
  variables {
    api_public_cidrs = ["203.0.113.0/24"]
  }

  assert {
    condition     = aws_eks_cluster.this.vpc_config[0].endpoint_public_access && aws_eks_cluster.this.vpc_config[0].public_access_cidrs == toset(["203.0.113.0/24"])
    error_message = "public endpoint limited to the listed range"
  }
}

run "service_account_role_trusts_only_the_csi_controller" {
  command = apply

  assert {
    condition     = jsondecode(aws_iam_role.ebs_csi.assume_role_policy).Statement[0].Condition.StringEquals["oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF:sub"] == "system:serviceaccount:kube-system:ebs-csi-controller-sa"
    error_message = "the EBS CSI role is bound to its service account"
  }
  assert {
    condition     = aws_iam_openid_connect_provider.cluster.url == "https://oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF"
    error_message = "the IRSA provider is the cluster's issuer"
  }
}

# The HPA's CPU target reads the resource metrics API, which only metrics-server serves:
# without it every HPA of the delivery stays at its minimum.
run "add_ons_include_the_metrics_server_the_hpa_reads" {
  command = plan

  assert {
    condition     = toset(keys(aws_eks_addon.this)) == toset(["vpc-cni", "kube-proxy", "coredns", "aws-ebs-csi-driver", "metrics-server"])
    error_message = "the core add-ons, the EBS CSI driver and metrics-server"
  }
  assert {
    condition     = aws_eks_addon.this["metrics-server"].addon_name == "metrics-server" && aws_eks_addon.this["metrics-server"].service_account_role_arn == null
    error_message = "metrics-server is the EKS community add-on of that name, with no IAM role (it calls no AWS API)"
  }
  assert {
    condition     = aws_eks_addon.this["metrics-server"].cluster_name == aws_eks_cluster.this.name
    error_message = "metrics-server is installed in this cluster"
  }
}

# The delivery's NetworkPolicies (components/network-policies: default deny, Redis only
# from the app, database-rds: 5432 only to the private subnets) are enforced on EKS only
# by the VPC CNI's network policy agent, which the add-on leaves off unless its
# configuration turns it on: without it every policy is accepted and ignored.
run "vpc_cni_enforces_network_policies" {
  command = plan

  assert {
    condition     = try(jsondecode(aws_eks_addon.this["vpc-cni"].configuration_values).enableNetworkPolicy, null) == "true"
    error_message = "the vpc-cni add-on must set enableNetworkPolicy = \"true\", or no NetworkPolicy is enforced on the cluster"
  }
}

# The AWS Load Balancer Controller's role: a document shaped like the controller's
# published policy (that one is the operator's input, never kept here).
run "load_balancer_controller_role_trusts_only_its_service_account" {
  command = apply
  variables {
    load_balancer_controller_policy_json = jsonencode({
      Version = "2012-10-17"
      Statement = [
        { Effect = "Allow", Action = ["iam:CreateServiceLinkedRole", "ec2:DescribeVpcs", "elasticloadbalancing:DescribeLoadBalancers"], Resource = "*" },
        {
          Effect    = "Allow"
          Action    = ["elasticloadbalancing:DeleteLoadBalancer"]
          Resource  = "*"
          Condition = { Null = { "aws:ResourceTag/elbv2.k8s.aws/cluster" = "false" } }
        },
      ]
    })
  }

  assert {
    condition = jsondecode(aws_iam_role.load_balancer_controller[0].assume_role_policy).Statement == [{
      Effect    = "Allow"
      Principal = { Federated = aws_iam_openid_connect_provider.cluster.arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF:sub" = "system:serviceaccount:kube-system:aws-load-balancer-controller"
          "oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF:aud" = "sts.amazonaws.com"
        }
      }
    }]
    error_message = "the controller's role trusts its service account in kube-system, for STS, on this cluster's issuer, and nothing else"
  }
  assert {
    condition     = aws_iam_role.load_balancer_controller[0].name == "t-eks-lb-controller" && aws_iam_role.load_balancer_controller[0].tags == var.tags
    error_message = "the role is named after the cluster and tagged"
  }
  assert {
    condition     = jsondecode(aws_iam_policy.load_balancer_controller[0].policy) == jsondecode(var.load_balancer_controller_policy_json)
    error_message = "the policy is the given document, unchanged"
  }
  assert {
    condition     = aws_iam_role_policy_attachment.load_balancer_controller[0].role == aws_iam_role.load_balancer_controller[0].name && aws_iam_role_policy_attachment.load_balancer_controller[0].policy_arn == aws_iam_policy.load_balancer_controller[0].arn
    error_message = "the given policy is attached to the controller's role"
  }
  assert {
    condition     = output.load_balancer_controller_role_arn == aws_iam_role.load_balancer_controller[0].arn && output.load_balancer_controller_service_account == "aws-load-balancer-controller"
    error_message = "the role and the trusted service account are outputs (the Helm values)"
  }
}

run "no_load_balancer_controller_role_without_its_policy" {
  command = plan

  assert {
    condition     = length(aws_iam_role.load_balancer_controller) == 0 && length(aws_iam_policy.load_balancer_controller) == 0 && length(aws_iam_role_policy_attachment.load_balancer_controller) == 0
    error_message = "no policy given, no role, policy or attachment"
  }
  assert {
    condition     = output.load_balancer_controller_role_arn == null
    error_message = "no role ARN without the role"
  }
}

run "accepts_a_single_statement_object" {
  command = plan
  variables {
    load_balancer_controller_policy_json = "{\"Version\": \"2012-10-17\", \"Statement\": {\"Effect\": \"Allow\", \"Action\": \"ec2:DescribeVpcs\", \"Resource\": \"*\"}}"
  }

  assert {
    condition     = length(aws_iam_policy.load_balancer_controller) == 1
    error_message = "a Statement may be one object"
  }
}

run "rejects_a_controller_policy_that_is_not_json" {
  command = plan
  variables {
    load_balancer_controller_policy_json = "iam_policy.json"
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_truncated_controller_policy_json" {
  command = plan
  variables {
    load_balancer_controller_policy_json = "{\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": \"Allow\""
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_a_controller_policy_without_statement" {
  command = plan
  variables {
    load_balancer_controller_policy_json = jsonencode({ Version = "2012-10-17" })
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_a_controller_policy_with_no_statements" {
  command = plan
  variables {
    load_balancer_controller_policy_json = jsonencode({ Version = "2012-10-17", Statement = [] })
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_a_statement_without_effect" {
  command = plan
  variables {
    load_balancer_controller_policy_json = jsonencode({ Version = "2012-10-17", Statement = [{ Action = "ec2:DescribeVpcs", Resource = "*" }] })
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_a_trust_policy_as_controller_policy" {
  command = plan
  variables {
    load_balancer_controller_policy_json = jsonencode({
      Version   = "2012-10-17"
      Statement = [{ Effect = "Allow", Principal = { Federated = "arn:aws:iam::123456789012:oidc-provider/x" }, Action = "sts:AssumeRoleWithWebIdentity" }]
    })
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_a_controller_policy_allowing_every_action" {
  command = plan
  variables {
    load_balancer_controller_policy_json = jsonencode({ Version = "2012-10-17", Statement = [{ Effect = "Allow", Action = "*", Resource = "*" }] })
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_a_controller_policy_allowing_all_of_iam" {
  command = plan
  variables {
    load_balancer_controller_policy_json = jsonencode({ Version = "2012-10-17", Statement = [{ Effect = "Allow", Action = ["ec2:DescribeVpcs", "IAM:*"], Resource = "*" }] })
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_a_controller_policy_allowing_not_action" {
  command = plan
  variables {
    load_balancer_controller_policy_json = jsonencode({ Version = "2012-10-17", Statement = [{ Effect = "Allow", NotAction = "ec2:DeleteVpc", Resource = "*" }] })
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_a_controller_policy_over_the_managed_policy_size" {
  command = plan
  variables {
    load_balancer_controller_policy_json = jsonencode({
      Version   = "2012-10-17"
      Statement = [for i in range(200) : { Effect = "Allow", Action = "ec2:DescribeVpcs", Resource = "arn:aws:ec2:eu-west-1:123456789012:vpc/vpc-${i}" }]
    })
  }
  expect_failures = [var.load_balancer_controller_policy_json]
}

run "rejects_whole_internet_api" {
  command = plan
  variables {
    api_public_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.api_public_cidrs]
}

run "rejects_an_empty_zone" {
  command = plan
  variables {
    nodes_per_zone = { min = 0, desired = 1, max = 2 }
  }
  expect_failures = [var.nodes_per_zone]
}

run "rejects_two_zones" {
  command = plan
  variables {
    subnet_ids_by_zone = { "eu-west-1a" = "subnet-aaaa", "eu-west-1b" = "subnet-bbbb" }
  }
  expect_failures = [var.subnet_ids_by_zone]
}

run "rejects_whole_internet_api_with_a_padded_prefix" {
  command = plan
  variables {
    api_public_cidrs = ["0.0.0.0/00"]
  }
  expect_failures = [var.api_public_cidrs]
}

run "rejects_arm_instance_types" {
  command = plan
  variables {
    node_instance_types = ["m6i.large", "m7g.large"]
  }
  expect_failures = [var.node_instance_types]
}

run "rejects_a1_instance_types" {
  command = plan
  variables {
    node_instance_types = ["a1.large"]
  }
  expect_failures = [var.node_instance_types]
}

run "rejects_halves_that_cover_the_internet" {
  command = plan
  variables {
    api_public_cidrs = ["0.0.0.0/1", "128.0.0.0/1"]
  }
  expect_failures = [var.api_public_cidrs]
}

run "rejects_a_prefix_wider_than_8" {
  command = plan
  variables {
    api_public_cidrs = ["100.0.0.0/7"]
  }
  expect_failures = [var.api_public_cidrs]
}

run "accepts_a_8_and_a_single_address" {
  command = plan
  variables {
    api_public_cidrs = ["10.0.0.0/8", "198.51.100.7/32"]
  }
  assert {
    condition     = toset(aws_eks_cluster.this.vpc_config[0].public_access_cidrs) == toset(["10.0.0.0/8", "198.51.100.7/32"])
    error_message = "a /8 and a /32 are allowed as given"
  }
}

run "rejects_host_bits" {
  command = plan
  variables {
    api_public_cidrs = ["203.0.113.5/24"]
  }
  expect_failures = [var.api_public_cidrs]
}

run "rejects_ipv6_on_an_ipv4_cluster" {
  command = plan
  variables {
    api_public_cidrs = ["2001:db8::/48"]
  }
  expect_failures = [var.api_public_cidrs]
}

run "rejects_kubernetes_1_10" {
  command = plan
  variables {
    kubernetes_version = "1.10"
  }
  expect_failures = [var.kubernetes_version]
}

run "rejects_kubernetes_1_27" {
  command = plan
  variables {
    kubernetes_version = "1.27"
  }
  expect_failures = [var.kubernetes_version]
}

# 1.34's EKS standard support ended on 2026-12-02, 1.32's on 2026-03-23: the cluster's
# STANDARD upgrade policy does not keep a cluster on them.
run "rejects_kubernetes_1_34_past_standard_support" {
  command = plan
  variables {
    kubernetes_version = "1.34"
  }
  expect_failures = [var.kubernetes_version]
}

run "rejects_kubernetes_1_32_past_standard_support" {
  command = plan
  variables {
    kubernetes_version = "1.32"
  }
  expect_failures = [var.kubernetes_version]
}

run "default_kubernetes_is_in_range_and_standard_support" {
  command = plan
  assert {
    condition     = aws_eks_cluster.this.version == "1.35" && aws_eks_cluster.this.upgrade_policy[0].support_type == "STANDARD"
    error_message = "the default is 1.35 (EKS standard support until 2027-03-27), without extended support"
  }
}

run "accepts_kubernetes_1_40" {
  command = plan
  variables {
    kubernetes_version = "1.40"
  }
  assert {
    condition     = aws_eks_cluster.this.version == "1.40"
    error_message = "1.40 is in range"
  }
}

run "rejects_kubernetes_1_41" {
  command = plan
  variables {
    kubernetes_version = "1.41"
  }
  expect_failures = [var.kubernetes_version]
}

# Without a release, a node group keeps the AMI it was created with until the next
# Kubernetes upgrade: EKS never rolls nodes onto a newer AMI release by itself. The
# release is an input, so a patched node OS is a reviewed plan (in-place update, one node
# at a time).
run "node_ami_release_is_set_from_the_variable" {
  command = plan
  variables {
    node_ami_release_version = "1.35.0-20261201"
  }

  assert {
    condition     = alltrue([for ng in aws_eks_node_group.zone : ng.release_version == "1.35.0-20261201"])
    error_message = "every node group runs the given AMI release"
  }
}

run "rejects_an_ami_release_of_another_minor" {
  command = plan
  variables {
    node_ami_release_version = "1.34.2-20261201"
  }
  expect_failures = [var.node_ami_release_version]
}

run "rejects_a_version_as_ami_release" {
  command = plan
  variables {
    node_ami_release_version = "1.35"
  }
  expect_failures = [var.node_ami_release_version]
}
