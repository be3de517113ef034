"""Each account's notification settings, as the notifier last read them from the compacted
``oms.notification-settings`` topic."""

from __future__ import annotations

from collections.abc import Iterator

from oms.schemas.notify_settings import NotificationSettings


class SettingsBook:
    """Account id -> :class:`NotificationSettings`. An account that never stored any gets the
    default (console only) the first time it is needed, and is known from then on."""

    def __init__(self) -> None:
        self._by_account: dict[str, NotificationSettings] = {}

    def get(self, account_id: str) -> NotificationSettings | None:
        """The account's stored settings, or None (no default is made up)."""
        return self._by_account.get(account_id)

    def settings_for(self, account_id: str) -> NotificationSettings:
        """The account's settings, or the default."""
        found = self._by_account.get(account_id)
        if found is None:
            found = NotificationSettings(account_id=account_id)
            self._by_account[account_id] = found
        return found

    def apply(self, settings: NotificationSettings) -> None:
        """New settings of ``settings.account_id``, in force at once."""
        self._by_account[settings.account_id] = settings

    def remove(self, account_id: str) -> None:
        """Back to the default settings (the account's record was deleted)."""
        self._by_account.pop(account_id, None)

    def items(self) -> list[tuple[str, NotificationSettings]]:
        """A snapshot of (account id, settings)."""
        return list(self._by_account.items())

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._by_account

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._by_account))

    def __len__(self) -> int:
        return len(self._by_account)
