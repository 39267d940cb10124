"""Protobuf messages across the extension: (full type name, bytes).

Python messages go in serialized, whatever the protobuf backend; a reply
comes back as the class the caller asked for, else the class registered for
its type (the default symbol database / descriptor pool), else as a
google.protobuf.Any holding it.
"""

from google.protobuf import any_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message as _message
from google.protobuf import message_factory
from google.protobuf import symbol_database

from hostmesh import _errors

_factory = message_factory.MessageFactory()


def encode(message, what="message"):
    """(full type name, bytes) of a protobuf message; TypeError otherwise."""
    if isinstance(message, type) and issubclass(message, _message.Message):
        raise TypeError(
            f"{what} must be a protobuf message, got the class "
            f"{message.__name__} (did you mean {message.__name__}()?)")
    if not isinstance(message, _message.Message):
        raise TypeError(f"{what} must be a protobuf message, got "
                        f"{type(message).__name__}: {message!r:.80}")
    return message.DESCRIPTOR.full_name, message.SerializeToString()


def check_reply_type(reply_type):
    if reply_type is None:
        return
    if not (isinstance(reply_type, type) and
            issubclass(reply_type, _message.Message)):
        raise TypeError("reply_type must be a protobuf message class, got "
                        f"{reply_type!r:.80}")


def message_class(type_name):
    """The Python class of message type `type_name`, or None."""
    try:
        return symbol_database.Default().GetSymbol(type_name)
    except KeyError:
        pass
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return None
    return _factory.GetPrototype(descriptor)


def decode(type_name, data, reply_type=None):
    """A reply (type name, bytes) as a message.

    As `reply_type` if given (InvalidArgument if the reply is of another
    type); else as the class registered for the type; else an Any.
    """
    if reply_type is not None:
        if reply_type.DESCRIPTOR.full_name != type_name:
            raise _errors.InvalidArgument(
                f"expected a reply of type {reply_type.DESCRIPTOR.full_name}, "
                f"got {type_name}")
        return reply_type.FromString(data)
    cls = message_class(type_name)
    if cls is None:
        return any_pb2.Any(type_url="type.googleapis.com/" + type_name,
                           value=data)
    return cls.FromString(data)
