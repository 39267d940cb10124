"""The mesh's messages (generated from the repository's proto/ at build time).

  actors_pb2    built-in actor messages: GetActorId, ActorIdReply, Echo,
                Increment, GetCount, Count, Fail, ...
  mailbox_pb2   PortRef, ActorRef, Reduce, Reduced, ProcExit
  proc_pb2      SupervisionEvent, ActorState
  host_pb2      ProcSpec, ProcState
  resource_pb2  Status, Error
  python_actor_pb2  PythonActorSpec (what spawning a Python actor sends;
                the package's own, from python/hostmesh/proto/)
"""
