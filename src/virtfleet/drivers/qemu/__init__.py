"""drivers/qemu"""
