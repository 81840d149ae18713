# Offline unit tests of the network module (mocked provider: no AWS call).
# ARNs the provider validates on (mock) apply must at least look like ARNs.
mock_provider "aws" {
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/mock" }
  }
}

variables {
  name               = "t-net"
  aws_account_id     = "123456789012"
  region             = "eu-west-1"
  availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  cluster_name       = "t-cluster"
  tags               = { Project = "comments-api", Environment = "test" }
}

run "three_zones_public_and_private" {
  command = plan

  assert {
    condition     = toset([for s in aws_subnet.private : s.availability_zone]) == toset(var.availability_zones)
    error_message = "one private subnet per zone"
  }
  assert {
    condition     = toset([for s in aws_subnet.public : s.availability_zone]) == toset(var.availability_zones)
    error_message = "one public subnet per zone"
  }
  assert {
    condition     = length(distinct(concat([for s in aws_subnet.private : s.cidr_block], [for s in aws_subnet.public : s.cidr_block]))) == 6
    error_message = "six distinct subnet ranges"
  }
  assert {
    condition     = alltrue([for s in concat(values(aws_subnet.private), values(aws_subnet.public)) : s.map_public_ip_on_launch == false])
    error_message = "no subnet hands out public IPs on launch"
  }
  assert {
    condition     = alltrue([for s in aws_subnet.private : s.tags["kubernetes.io/role/internal-elb"] == "1" && s.tags["Project"] == "comments-api"])
    error_message = "private subnets carry the internal-ELB discovery tag and the common tags"
  }
  assert {
    condition     = aws_flow_log.this.traffic_type == "ALL" && aws_cloudwatch_log_group.flow.retention_in_days == 365
    error_message = "flow logs capture all traffic and are kept a year"
  }
  assert {
    condition     = module.logs_key.alias == "alias/${var.name}-flow-logs"
    error_message = "the flow-log key comes from the kms-key module (rotation: its own tests)"
  }
  assert {
    condition     = length(aws_nat_gateway.this) == 3
    error_message = "a NAT gateway per zone by default"
  }
}

run "private_zones_leave_through_their_own_nat" {
  command = apply

  assert {
    condition     = alltrue([for az in var.availability_zones : aws_route.private_nat[az].nat_gateway_id == aws_nat_gateway.this[az].id])
    error_message = "each zone's private route goes through that zone's NAT gateway"
  }
  assert {
    condition     = output.private_subnet_ids == [for az in var.availability_zones : aws_subnet.private[az].id]
    error_message = "private_subnet_ids follow the zone order"
  }
}

run "single_nat_for_staging" {
  command = apply
  variables {
    single_nat_gateway = true
  }

  assert {
    condition     = keys(aws_nat_gateway.this) == ["eu-west-1a"]
    error_message = "one NAT gateway"
  }
  assert {
    condition     = alltrue([for r in aws_route.private_nat : r.nat_gateway_id == aws_nat_gateway.this["eu-west-1a"].id])
    error_message = "every zone routes through the single NAT gateway"
  }
}

run "rejects_two_zones" {
  command = plan
  variables {
    availability_zones = ["eu-west-1a", "eu-west-1b"]
  }
  expect_failures = [var.availability_zones]
}

run "rejects_a_too_small_vpc" {
  command = plan
  variables {
    vpc_cidr = "10.0.0.0/24"
  }
  expect_failures = [var.vpc_cidr]
}

run "rejects_zones_of_another_region" {
  command = plan
  variables {
    availability_zones = ["us-east-1a", "us-east-1b", "us-east-1c"]
  }
  expect_failures = [var.availability_zones]
}

run "rejects_zone_ids" {
  command = plan
  variables {
    availability_zones = ["euw1-az1", "euw1-az2", "euw1-az3"]
  }
  expect_failures = [var.availability_zones]
}

run "rejects_host_bits_in_the_vpc_range" {
  command = plan
  variables {
    vpc_cidr = "10.40.1.0/16"
  }
  expect_failures = [var.vpc_cidr]
}

run "rejects_an_ipv6_vpc_range" {
  command = plan
  variables {
    vpc_cidr = "fd00::/16"
  }
  expect_failures = [var.vpc_cidr]
}
