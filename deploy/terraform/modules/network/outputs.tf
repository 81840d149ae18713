output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "IPv4 range of the VPC (for security group rules of workloads inside it)."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnet IDs, one per availability zone, in the order of var.availability_zones (nodes, database)."
  value       = [for az in var.availability_zones : aws_subnet.private[az].id]
}

output "private_subnet_cidrs" {
  description = "IPv4 ranges of the private subnets, in the order of var.availability_zones (the database lives there: the app's NetworkPolicy egress to PostgreSQL)."
  value       = [for az in var.availability_zones : aws_subnet.private[az].cidr_block]
}

output "private_subnet_ids_by_zone" {
  description = "Private subnet ID keyed by availability zone (one node group per zone uses this)."
  value       = { for az, s in aws_subnet.private : az => s.id }
}

output "public_subnet_ids" {
  description = "Public subnet IDs, one per availability zone (internet-facing load balancers)."
  value       = [for az in var.availability_zones : aws_subnet.public[az].id]
}

output "nat_public_ips" {
  description = "Egress addresses of the NAT gateways (to allow-list the platform at third parties)."
  value       = [for az in local.nat_zones : aws_eip.nat[az].public_ip]
}

output "flow_log_group_name" {
  description = "CloudWatch Logs group receiving the VPC flow logs."
  value       = aws_cloudwatch_log_group.flow.name
}
