# Replace with your account before applying (123456789012 is AWS's documentation account,
# which the offline CI plan uses).
aws_account_id = "123456789012"
region         = "eu-west-1"
