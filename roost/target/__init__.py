"""What runs on a target host: releases, host operations, the agent's commands.

Standard library only; shipped to bare hosts in the zipapp.
"""
