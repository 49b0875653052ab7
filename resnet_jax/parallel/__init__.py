"""Devices and hosts: meshes and shardings, several steps per call, start-up."""
