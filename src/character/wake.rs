//! Waking up: the constructor runs on every start, so the first event after
//! one builds the state here from SQLite (name, epoch, archive mark, the
//! latest seq, recent idempotency keys, the retained commands, the
//! event-log buffer's counts) and from each hibernated socket's attachment,
//! which the hub gets back as `Input::Restore`.

use routing::archive;
use routing::hub::{Hub, Input};
use routing::lease::{on_wake, OnWake};
use routing::retained::RetainedSet;
use routing::topic::CharacterId;

use routing::relay::Follower;
use routing::relays::{parse_relay_name, RelaySet};

use super::core::{Core, Role};
use super::relay::RELAY_LAST;
use super::tasks::Task;
use super::{attachment, random_hex, AppResult, Character};
use crate::config::Config;
use crate::error::AppError;
use crate::store::Store;

impl Character {
    /// Builds the in-memory state on the first event after a (re)start.
    /// `name_hint` is the name the router sent, for an object that has not
    /// stored its own yet.
    pub(super) fn ensure_core(&self, now: u64, name_hint: Option<&str>) -> AppResult<()> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let store = Store::open(&self.state.storage())?;
        let stored_name = store.meta("character")?;
        let name = match (self.state.id().name(), stored_name.clone(), name_hint) {
            (Some(n), _, _) | (None, Some(n), _) => n,
            (None, None, Some(n)) => n.to_string(),
            (None, None, None) => {
                return Err(AppError::internal("character object woke without a name"))
            }
        };
        if stored_name.as_deref() != Some(name.as_str()) {
            store.set_meta("character", &name)?;
        }
        let config = Config::cached(&self.env);
        // A relay's name is its character's plus `~r<n>` (`routing::relays`).
        let relay = parse_relay_name(&name);
        let character = match &relay {
            Some((character, _)) => character.clone(),
            None => CharacterId::parse(&name)
                .map_err(|e| AppError::internal(format!("object name: {e}")))?,
        };
        // A new object (no epoch yet) holds no alarm: nothing to read.
        let mut fresh = false;
        let epoch = match (store.meta("epoch")?, &relay) {
            (Some(e), _) => e,
            // A relay learns its epoch from the owner's first request.
            (None, Some(_)) => String::new(),
            (None, None) => {
                let e = format!("{now:x}{}", random_hex(2));
                store.set_meta("epoch", &e)?;
                fresh = true;
                e
            }
        };
        let page_size = match store.meta_u64("page_size")? {
            Some(size) if size > 0 => size,
            _ => {
                let size = archive::page_size(config.history_limit);
                store.set_meta("page_size", &size.to_string())?;
                size
            }
        };
        let archived_through = store.meta_u64("archived_through")?.unwrap_or(0);
        let latest = match relay {
            Some(_) => store.meta_u64(RELAY_LAST)?.unwrap_or(0),
            None => store.latest_seq()?,
        };
        let mut hub = Hub::new(character, epoch.clone(), latest, config.batch_window_ms)
            .with_refresh(config.registry_lease_ms / 2);
        let role = match relay {
            Some((_, index)) => Role::Relay {
                index,
                follower: Follower::new(epoch, latest),
                pending: 0,
            },
            None => {
                for row in store.recent_ids(now)? {
                    hub.restore_idempotency(row.id, row.seq as u64, row.ts as u64);
                }
                let rev = store.meta_u64(crate::store::RETAINED_REV)?.unwrap_or(0);
                hub.set_retained(RetainedSet::of_record(store.retained()?, rev));
                let mut relays = RelaySet::new(config.fanout_limit);
                for (index, sockets) in store.relays()? {
                    relays.restore(index, sockets);
                }
                for scene in store.scenes()? {
                    relays.scenes.restore(&scene);
                }
                Role::Owner { relays }
            }
        };
        let storage = self.state.storage();
        let mut core = Core::new(
            hub,
            role,
            name.clone(),
            store,
            config,
            archived_through,
            page_size,
            storage,
        );
        if fresh {
            core.alarm = routing::alarm::Armed::Unset;
            core.note_turn_writes();
        }
        // Relays fed before the restart: a probe each finds where it is
        // (a scene's answer also says whether it holds presence sockets).
        core.sync_scenes();
        core.feed_relays();
        // Events buffered before the restart: their flush deadline (the
        // alarm, armed when this event settles) counts from the oldest.
        core.logbuf.recount(core.store.logs.held()?);
        let mut restored = 0usize;
        for ws in self.state.get_websockets() {
            match attachment::restore(&ws, &core.store) {
                Some((info, expires_at)) => {
                    let client = core.add_socket(ws);
                    core.feed(
                        now,
                        Input::Restore {
                            client,
                            info,
                            expires_at,
                        },
                    );
                    restored += 1;
                }
                None => {
                    let _ = ws.close(Some(1011), Some("state lost; reconnect"));
                }
            }
        }
        // Catch up with an archive that lagged before the restart, which no
        // publish would start while the backlog refuses them.
        core.archive_if_due(now);
        // A wake from hibernation finds the sockets its registry entry
        // names, so it only resumes the lease refresh; after the runtime
        // died, the entry may name sockets that are gone (`routing::lease`).
        let listed_at = core.store.listed_at()?;
        match on_wake(restored > 0, listed_at, now, core.config.registry_lease_ms) {
            OnWake::Report => core.request(Task::Report),
            OnWake::RefreshAt(at) => core.hub.resume_refresh(at),
            OnWake::Nothing => {}
        }
        if restored > 0 {
            worker::console_log!(
                "character {name}: woke with {restored} sockets, restored from their attachments"
            );
        }
        *self.core.borrow_mut() = Some(core);
        Ok(())
    }
}
