"""drivers/fake"""
