"""The EWS operations the emulator serves, one module each, registered by the body element's name."""

from __future__ import annotations

from ..service import Operation
from . import (
    convert_id,
    create_item,
    delete_item,
    find_folder,
    find_item,
    get_events,
    get_folder,
    get_item,
    get_streaming_events,
    move_item,
    resolve_names,
    subscribe,
    sync_folder_items,
    unsubscribe,
    update_item,
)

OPERATIONS: dict[str, Operation] = {
    "ConvertId": convert_id.handle,
    "GetFolder": get_folder.handle,
    "FindFolder": find_folder.handle,
    "ResolveNames": resolve_names.handle,
    "CreateItem": create_item.handle,
    "GetItem": get_item.handle,
    "UpdateItem": update_item.handle,
    "DeleteItem": delete_item.handle,
    "MoveItem": move_item.handle,
    "FindItem": find_item.handle,
    "SyncFolderItems": sync_folder_items.handle,
    "Subscribe": subscribe.handle,
    "Unsubscribe": unsubscribe.handle,
    "GetEvents": get_events.handle,
    "GetStreamingEvents": get_streaming_events.handle,
}
