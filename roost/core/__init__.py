"""The sans-IO core of a swarm member: pure policy, no sockets, files or clock.

roost.core.member.SwarmMember is fed bytes, events and `now` and returns
actions (roost.core.actions) and its next deadline; roost.engine is the
asyncio adapter that moves the bytes and carries the actions out.
"""
