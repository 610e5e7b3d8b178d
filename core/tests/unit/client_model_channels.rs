//! Conversations apart (the room, one per private correspondent), unread counts and markers,
//! and Enter in a private conversation. Issue 13 (natter gui: private conversations told apart,
//! unread markers).

use std::time::Instant;

use super::*;
use crate::chat::client::ClientEvent;
use crate::client_model::{Action, ClientModel, SessionEvent, TimeOfDay};

fn clock() -> Clock {
    Clock { now: Instant::now(), time: TimeOfDay { hour: 10, minute: 0, second: 0 } }
}

/// Alice, joined, with bob and carol here; the actions so far taken.
fn joined() -> ClientModel {
    let mut model = ClientModel::new("alice", "127.0.0.1:4000", clock());
    server(&mut model, ClientEvent::Joined("alice".into()));
    server(&mut model, ClientEvent::Presence(vec!["bob".into(), "carol".into()]));
    while model.poll_action().is_some() {}
    model
}

fn server(model: &mut ClientModel, event: ClientEvent) {
    model.handle_event(clock(), SessionEvent::Server(event));
}

fn public(from: &str, text: &str) -> ClientEvent {
    ClientEvent::Public { from: from.into(), text: text.into() }
}

fn private(from: &str, text: &str) -> ClientEvent {
    ClientEvent::Private { from: from.into(), text: text.into() }
}

fn sent(model: &mut ClientModel) -> Vec<String> {
    std::iter::from_fn(|| model.poll_action())
        .map(|a| match a {
            Action::Send(line) => line,
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_private_line_opens_its_conversation_and_counts_as_unread_there() {
    let mut model = joined();
    let mut ch = Channels::default();
    ch.update(model.conversation(), true);
    assert_eq!(ch.list(), [Channel::Room]);

    server(&mut model, private("bob", "psst"));
    server(&mut model, private("Bob", "still there?"));
    server(&mut model, public("carol", "hello all"));
    ch.update(model.conversation(), true);
    assert_eq!(ch.list(), [Channel::Room, Channel::Private("bob".into())], "one per person");
    let bob = Channel::Private("BOB".into());
    assert_eq!(ch.unread(&bob, model.conversation()), 2, "names compare without case");
    assert!(ch.unread_mention(&bob, model.conversation()), "a private message is a mention");
    assert_eq!(ch.unread(&Channel::Room, model.conversation()), 0, "the room is shown: read");

    ch.select(&bob, model.conversation());
    assert!(ch.current().is(&bob));
    assert_eq!(ch.marker(), Some(0), "never looked at: unread from its start");
    assert_eq!(ch.unread(&bob, model.conversation()), 0, "shown: read");
}

#[test]
fn only_what_others_said_is_unread_and_the_views_filter() {
    let mut model = joined();
    let mut ch = Channels::default();
    let bob = Channel::Private("bob".into());
    ch.select(&bob, model.conversation());
    assert_eq!(ch.marker(), None, "nothing unread");
    server(&mut model, ClientEvent::Joined("dave".into()));
    server(&mut model, public("alice", "my own line"));
    server(&mut model, ClientEvent::Error("no such user: zed".into()));
    server(&mut model, public("carol", "hi"));
    server(&mut model, ClientEvent::PrivateSent { to: "bob".into(), text: "to bob".into() });
    ch.update(model.conversation(), true);
    assert_eq!(ch.unread(&Channel::Room, model.conversation()), 1, "carol's line alone");
    assert_eq!(ch.unread(&bob, model.conversation()), 0, "our own private line is read");

    let lines = model.conversation().lines();
    let in_bob: Vec<&str> =
        lines.iter().filter(|l| bob.shows(l)).map(|l| l.text.as_str()).collect();
    assert_eq!(in_bob, ["no such user: zed", "to bob"], "its lines and the errors");
    assert_eq!(lines.iter().filter(|l| Channel::Room.shows(l)).count(), lines.len());
}

#[test]
fn lines_that_arrive_while_the_window_is_away_are_marked_on_return() {
    let mut model = joined();
    let mut ch = Channels::default();
    ch.update(model.conversation(), true);
    let last_read = model.conversation().last_seq();
    server(&mut model, public("bob", "one"));
    ch.update(model.conversation(), false);
    server(&mut model, public("bob", "two"));
    ch.update(model.conversation(), false);
    assert_eq!(ch.unread(&Channel::Room, model.conversation()), 2, "not seen while away");
    ch.update(model.conversation(), true);
    assert_eq!(ch.marker(), Some(last_read));
    assert_eq!(ch.unread(&Channel::Room, model.conversation()), 0);
    server(&mut model, public("bob", "three"));
    ch.update(model.conversation(), true);
    assert_eq!(ch.marker(), Some(last_read), "lines read as they come do not move it");
}

#[test]
fn closing_a_conversation_keeps_the_room_and_the_shown_one() {
    let mut model = joined();
    let mut ch = Channels::default();
    server(&mut model, private("bob", "a"));
    server(&mut model, private("carol", "b"));
    ch.update(model.conversation(), true);
    let (bob, carol) = (Channel::Private("bob".into()), Channel::Private("carol".into()));
    ch.select(&carol, model.conversation());
    ch.close(&bob);
    assert!(ch.current().is(&carol), "the one shown stays shown");
    ch.close(&Channel::Room);
    assert_eq!(ch.list().len(), 2, "the room does not close");
    ch.close(&carol);
    assert_eq!(ch.current(), &Channel::Room);
    assert_eq!(ch.list(), [Channel::Room]);
}

#[test]
fn enter_in_a_private_conversation_writes_to_its_person() {
    let mut model = joined();
    let bob = Channel::Private("bob".into());
    *model.input_mut() = "just for you".into();
    model.submit_input_in(clock(), &bob);
    assert_eq!(sent(&mut model), ["~bob just for you"]);
    assert_eq!(model.input(), "");

    *model.input_mut() = "/who".into();
    model.submit_input_in(clock(), &bob);
    assert_eq!(sent(&mut model), ["show"], "a command stays a command");
    *model.input_mut() = "~carol hi".into();
    model.submit_input_in(clock(), &bob);
    assert_eq!(sent(&mut model), ["~carol hi"]);
    *model.input_mut() = "to all".into();
    model.submit_input_in(clock(), &Channel::Room);
    assert_eq!(sent(&mut model), ["to all"]);

    model.history_older();
    model.history_older();
    model.history_older();
    assert_eq!(model.input(), "/who", "private lines are in the history too");
}

#[test]
fn a_refused_name_is_still_the_next_name_in_a_private_view() {
    let mut model = ClientModel::new("alice", "127.0.0.1:4000", clock());
    while model.poll_action().is_some() {}
    server(&mut model, ClientEvent::NameRefused("taken".into()));
    *model.input_mut() = "alice2".into();
    model.submit_input_in(clock(), &Channel::Private("bob".into()));
    assert_eq!(sent(&mut model), ["alice2"]);
}

#[test]
fn a_verified_download_names_its_folder() {
    use crate::client_model::{Download, DownloadState};
    let mut d = Download::requested("a.txt");
    assert_eq!(d.folder(), None);
    d.state = DownloadState::Verified { path: "/home/a/Downloads/a.txt".into() };
    assert_eq!(d.folder().as_deref(), Some("/home/a/Downloads"));
    d.state = DownloadState::Verified { path: "a.txt".into() };
    assert_eq!(d.folder().as_deref(), Some("."));
}
