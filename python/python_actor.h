// The "python" actor type of procd_py (//python:procd_py): an actor whose
// handlers are the methods of a Python class (a subclass of hostmesh.Actor,
// python/hostmesh/_actor.py), in a proc that embeds the interpreter.
//
// Its params are a hostmesh.python.PythonActorSpec
// (python/hostmesh/proto/python_actor.proto): the class's module and
// qualified name, and the user's params. Init imports the module (from the
// proc's sys.path: PYTHONPATH in its spec's env), makes the instance and
// declares one handler per message type the class handles
// (Actor::HandleErased). A message crosses into Python as its type name and
// bytes and is decoded there with the class the module registered for it;
// the reply comes back the same way (python/foreign_types.h).
//
// The runtime runs one actor's handlers one at a time on the actor's thread;
// each actor keeps one Python thread state for that thread and holds the GIL
// only while Python runs (parsing, a handler, Init, its end). A Python
// exception fails the actor: the error (and so the supervision event) holds
// the exception and the last lines of its traceback; the whole traceback
// goes to the proc's stderr.
//
// Needs a running interpreter whose GIL no thread holds while the proc
// serves (procd_py_main.cc).
#ifndef HOSTMESH_PYTHON_PYTHON_ACTOR_H_
#define HOSTMESH_PYTHON_PYTHON_ACTOR_H_

#include "hostmesh/actor.h"

namespace mesh::python {

// The actor type name Python actors are spawned as.
inline constexpr char kPythonActorType[] = "python";
// The full name of their params' type.
inline constexpr char kPythonActorSpecType[] =
    "hostmesh.python.PythonActorSpec";

// Registers "python" (and the embedded module _hostmesh_proc it uses).
void RegisterPythonActor(ActorRegistry& registry);

}  // namespace mesh::python

#endif  // HOSTMESH_PYTHON_PYTHON_ACTOR_H_
