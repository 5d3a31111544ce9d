"""Group-buy (拼团): its rules (`games.groupbuy.rules`) and its seam value `GAME`."""

from games.groupbuy.game import GAME
from games.groupbuy.rules import (
    OUTBOX_TYPES,
    Command,
    DealCompleted,
    Event,
    ExpireGroup,
    Group,
    GroupBuyState,
    GroupCompleted,
    GroupFailed,
    GroupOpened,
    GroupStatus,
    JoinGroup,
    MemberJoined,
    OpenGroup,
    Refunded,
    VirtualFilled,
    apply,
    decide,
    event_from_dict,
    event_to_dict,
    evolve,
    fold,
    group_summary,
    group_view,
    initial_state,
    state_from_groups,
)

__all__ = [
    "GAME", "OUTBOX_TYPES", "Command", "DealCompleted", "Event", "ExpireGroup", "Group",
    "GroupBuyState", "GroupCompleted", "GroupFailed", "GroupOpened", "GroupStatus",
    "JoinGroup", "MemberJoined", "OpenGroup", "Refunded", "VirtualFilled", "apply", "decide",
    "event_from_dict", "event_to_dict", "evolve", "fold", "group_summary", "group_view",
    "initial_state", "state_from_groups",
]
