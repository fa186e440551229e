"""Fleet lab: emulated hosts in network namespaces with shaped, fair links."""

from bench.lab.core import Host, Lab, LabError, NotRun, host_ip, teardown_all

__all__ = ["Host", "Lab", "LabError", "NotRun", "host_ip", "teardown_all"]
