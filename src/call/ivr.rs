//! The PIN-collecting voice menu (DESIGN.md §Call flow, steps 3–5), as a sans-IO state machine.
//!
//! The call task feeds it what happened — a key pressed (RFC 4733, SIP INFO or in-band, already
//! de-duplicated), a prompt finished playing, the result of a PIN lookup — together with the
//! current time, and drains [`Action`]s: play a prompt, stop the prompt (barge-in), look a PIN
//! up, join the room, hang up. Timers are a single deadline the driver sleeps until and then
//! reports with [`Ivr::on_timeout`]; nothing here reads a clock or sleeps, so every branch is a
//! unit test with simulated time.
//!
//! Rules (DESIGN.md): digits typed while a prompt plays interrupt it and count; `#` ends the
//! entry; `*` clears it and replays the prompt; no first digit within `first_digit_timeout`
//! replays the prompt (a few times, then goodbye); a pause longer than `inter_digit_timeout`
//! ends the entry; an unknown, revoked or out-of-window PIN plays "not valid" and the caller
//! tries again, up to `max_attempts`, then goodbye and hang-up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::pins::source::Grant;

/// A longest PIN we accept from a caller's keypad. Longer entries are looked up as typed so the
/// caller hears "not valid" rather than being silently cut off (config allows up to 20 digits).
pub const MAX_ENTRY_DIGITS: usize = 32;

/// Timers and limits of the menu, from the `[ivr]` section and the trunk.
#[derive(Debug, Clone)]
pub struct IvrConfig {
    pub first_digit_timeout: Duration,
    pub inter_digit_timeout: Duration,
    /// PIN lookups that may fail before the call ends.
    pub max_attempts: u32,
    /// How many times the welcome prompt is replayed for lack of a first digit before goodbye.
    pub max_prompt_replays: u32,
    /// Longest time a caller may spend in the menu, whatever they do.
    pub max_ivr_time: Duration,
}

impl Default for IvrConfig {
    fn default() -> Self {
        IvrConfig {
            first_digit_timeout: Duration::from_secs(10),
            inter_digit_timeout: Duration::from_secs(5),
            max_attempts: 3,
            max_prompt_replays: 3,
            max_ivr_time: Duration::from_secs(120),
        }
    }
}

/// Prompts the menu asks the driver to play (names match the media prompt catalog).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    WelcomeEnterPin,
    InvalidPin,
    TooManyAttemptsGoodbye,
    Joining,
    LockedOut,
    ServiceUnavailable,
    Goodbye,
    /// "Please hold. You will be connected shortly."
    PleaseHold,
}

/// Why the menu ends the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    TooManyAttempts,
    NoInput,
    IvrTimeLimit,
    LockedOut,
    ServiceUnavailable,
}

impl EndReason {
    /// Stable label for call records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::TooManyAttempts => "too_many_attempts",
            EndReason::NoInput => "no_input",
            EndReason::IvrTimeLimit => "ivr_time_limit",
            EndReason::LockedOut => "locked_out",
            EndReason::ServiceUnavailable => "service_unavailable",
        }
    }
}

/// Digits the caller keyed, ended by `#` or a pause. Debug never shows the digits.
#[derive(Clone, PartialEq, Eq)]
pub struct PinEntry(String);

impl PinEntry {
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PinEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinEntry({} digits)", self.0.len())
    }
}

/// The result of looking a PIN up, as the driver reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The PIN is valid now: join this room.
    Room(Grant),
    /// Unknown, revoked or outside its validity window: the caller may try again.
    Invalid,
    /// The calling number is locked out for guessing: refuse even a right PIN.
    LockedOut,
    /// The store could not be reached.
    Unavailable,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start playing this prompt now, replacing whatever was playing.
    Play(Prompt),
    /// Stop the prompt that is playing (the caller barged in).
    StopPrompt,
    /// Look this PIN up in the trunk's namespace and report with [`Ivr::on_lookup`].
    Resolve(PinEntry),
    /// The PIN waits its turn to be checked (the trunk is under a guessing attack): play
    /// hold music after the "please hold" prompt until the lookup reports.
    HoldMusic,
    /// Join this room; the menu is over. "Joining" was queued just before.
    Join(Grant),
    /// Hang up now (the farewell prompt, if any, has finished playing).
    HangUp(EndReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The welcome prompt plays; no digit yet.
    Prompting,
    /// The prompt ended; waiting for the first digit.
    AwaitFirstDigit,
    /// At least one digit keyed; waiting for more, `#` or a pause.
    Collecting,
    /// A lookup is in flight.
    Resolving,
    /// The lookup waits its turn (the trunk is under attack); no time limit of the menu
    /// applies, the wait is bounded by the guard.
    Queued,
    /// "Not valid" plays; the caller may key the next attempt over it.
    Retrying,
    /// A farewell prompt plays, then the call hangs up.
    Ending(EndReason),
    /// Joined or hung up: the menu takes no more input.
    Done,
}

/// One caller's pass through the PIN menu.
#[derive(Debug)]
pub struct Ivr {
    config: IvrConfig,
    state: State,
    entry: String,
    prompt_playing: bool,
    attempts: u32,
    /// PINs submitted for a verdict, whatever the verdict.
    entries: u32,
    replays: u32,
    digit_deadline: Option<Instant>,
    menu_deadline: Instant,
    actions: VecDeque<Action>,
}

impl Ivr {
    /// Starts the menu: the welcome prompt plays at once.
    pub fn start(config: IvrConfig, now: Instant) -> Ivr {
        let menu_deadline = now + config.max_ivr_time;
        let mut ivr = Ivr {
            config,
            state: State::Prompting,
            entry: String::new(),
            prompt_playing: false,
            attempts: 0,
            entries: 0,
            replays: 0,
            digit_deadline: None,
            menu_deadline,
            actions: VecDeque::new(),
        };
        ivr.play(Prompt::WelcomeEnterPin);
        ivr
    }

    /// Failed PIN lookups so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// PINs keyed and submitted so far, right or wrong (for the call record).
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// True once the menu has handed the call to the room or hung up.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True while the caller is keying (for the `collecting_pin` call state).
    pub fn is_collecting(&self) -> bool {
        matches!(
            self.state,
            State::Prompting | State::AwaitFirstDigit | State::Collecting | State::Retrying
        )
    }

    /// Next action for the driver, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the driver must call [`Ivr::on_timeout`] next.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Done => None,
            // A farewell prompt always finishes; the menu limit no longer applies.
            State::Ending(_) => None,
            // The PIN guard bounds the wait and always reports.
            State::Queued => None,
            _ => Some(match self.digit_deadline {
                Some(d) => d.min(self.menu_deadline),
                None => self.menu_deadline,
            }),
        }
    }

    /// A key from the caller: `0`–`9`, `*`, `#` (`A`–`D` are ignored).
    pub fn on_key(&mut self, key: char, now: Instant) {
        match self.state {
            State::Prompting | State::AwaitFirstDigit | State::Collecting | State::Retrying => {}
            // Keys while a lookup runs, while saying goodbye or after joining are not PIN input.
            State::Resolving | State::Queued | State::Ending(_) | State::Done => return,
        }
        match key {
            '*' => {
                self.entry.clear();
                self.digit_deadline = None;
                self.state = State::Prompting;
                self.play(Prompt::WelcomeEnterPin);
            }
            '#' => {
                self.barge_in();
                if self.entry.is_empty() {
                    // A lone `#` is not an attempt: wait for digits as after the prompt.
                    self.state = State::AwaitFirstDigit;
                    self.digit_deadline = Some(now + self.config.first_digit_timeout);
                } else {
                    self.submit();
                }
            }
            '0'..='9' => {
                self.barge_in();
                if self.entry.len() < MAX_ENTRY_DIGITS {
                    self.entry.push(key);
                }
                self.state = State::Collecting;
                self.digit_deadline = Some(now + self.config.inter_digit_timeout);
            }
            _ => {}
        }
    }

    /// The prompt the menu asked for has finished playing.
    pub fn on_prompt_finished(&mut self, now: Instant) {
        self.prompt_playing = false;
        match self.state {
            State::Prompting | State::Retrying => {
                self.state = State::AwaitFirstDigit;
                self.digit_deadline = Some(now + self.config.first_digit_timeout);
            }
            State::Ending(reason) => {
                self.state = State::Done;
                self.actions.push_back(Action::HangUp(reason));
            }
            _ => {}
        }
    }

    /// The deadline from [`Ivr::deadline`] has passed (calling early is harmless).
    pub fn on_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Ending(_) | State::Done | State::Queued) {
            return;
        }
        if now >= self.menu_deadline {
            self.end(EndReason::IvrTimeLimit, Prompt::Goodbye);
            return;
        }
        let Some(deadline) = self.digit_deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.digit_deadline = None;
        match self.state {
            State::AwaitFirstDigit => {
                self.replays += 1;
                if self.replays > self.config.max_prompt_replays {
                    self.end(EndReason::NoInput, Prompt::Goodbye);
                } else {
                    self.state = State::Prompting;
                    self.play(Prompt::WelcomeEnterPin);
                }
            }
            // A pause longer than the inter-digit timeout ends the entry.
            State::Collecting => self.submit(),
            _ => {}
        }
    }

    /// The lookup asked for with [`Action::Resolve`] waits its turn: the caller hears that
    /// it is being connected, then hold music, never silence.
    pub fn on_queued(&mut self, _now: Instant) {
        if self.state != State::Resolving {
            return;
        }
        self.state = State::Queued;
        self.play(Prompt::PleaseHold);
        self.actions.push_back(Action::HoldMusic);
    }

    /// The result of the lookup asked for with [`Action::Resolve`].
    pub fn on_lookup(&mut self, lookup: Lookup, now: Instant) {
        if !matches!(self.state, State::Resolving | State::Queued) {
            return;
        }
        if self.state == State::Queued {
            // The wait did not count against the menu's own time limit.
            self.state = State::Resolving;
            self.menu_deadline = self.menu_deadline.max(now + self.config.inter_digit_timeout);
        }
        match lookup {
            Lookup::Room(grant) => {
                self.state = State::Done;
                self.play(Prompt::Joining);
                self.actions.push_back(Action::Join(grant));
            }
            Lookup::Invalid => {
                self.attempts += 1;
                if self.attempts >= self.config.max_attempts {
                    self.end(EndReason::TooManyAttempts, Prompt::TooManyAttemptsGoodbye);
                } else {
                    self.replays = 0;
                    self.state = State::Retrying;
                    self.play(Prompt::InvalidPin);
                }
            }
            Lookup::LockedOut => self.end(EndReason::LockedOut, Prompt::LockedOut),
            Lookup::Unavailable => {
                self.end(EndReason::ServiceUnavailable, Prompt::ServiceUnavailable)
            }
        }
    }

    fn play(&mut self, prompt: Prompt) {
        self.prompt_playing = true;
        self.actions.push_back(Action::Play(prompt));
    }

    fn barge_in(&mut self) {
        if self.prompt_playing {
            self.prompt_playing = false;
            self.actions.push_back(Action::StopPrompt);
        }
    }

    fn submit(&mut self) {
        self.entries += 1;
        self.digit_deadline = None;
        self.state = State::Resolving;
        let entry = PinEntry(std::mem::take(&mut self.entry));
        self.actions.push_back(Action::Resolve(entry));
    }

    fn end(&mut self, reason: EndReason, farewell: Prompt) {
        self.digit_deadline = None;
        self.entry.clear();
        self.state = State::Ending(reason);
        self.play(farewell);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IvrConfig {
        IvrConfig {
            first_digit_timeout: Duration::from_secs(10),
            inter_digit_timeout: Duration::from_secs(5),
            max_attempts: 3,
            max_prompt_replays: 2,
            max_ivr_time: Duration::from_secs(120),
        }
    }

    fn drain(ivr: &mut Ivr) -> Vec<Action> {
        std::iter::from_fn(|| ivr.poll_action()).collect()
    }

    fn keys(ivr: &mut Ivr, s: &str, now: Instant) -> Vec<Action> {
        for k in s.chars() {
            ivr.on_key(k, now);
        }
        drain(ivr)
    }

    fn resolve(entry: &str) -> Action {
        Action::Resolve(PinEntry(entry.to_string()))
    }

    fn room() -> Lookup {
        Lookup::Room(Grant {
            room: "standup".into(),
            ..Grant::default()
        })
    }

    #[test]
    fn a_queued_pin_hears_please_hold_then_music_and_outlives_the_menu_limit() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        ivr.on_prompt_finished(t0 + Duration::from_secs(3));
        assert_eq!(keys(&mut ivr, "1234#", t0 + Duration::from_secs(4)), vec![resolve("1234")]);
        ivr.on_queued(t0 + Duration::from_secs(4));
        assert_eq!(
            drain(&mut ivr),
            vec![Action::Play(Prompt::PleaseHold), Action::HoldMusic]
        );
        assert_eq!(ivr.deadline(), None, "no menu limit while queued");
        // Keys while waiting are not a new entry.
        assert!(keys(&mut ivr, "9#", t0 + Duration::from_secs(5)).is_empty());
        // Long past the 120 s menu limit, the verdict still counts.
        let late = t0 + Duration::from_secs(400);
        ivr.on_timeout(late);
        ivr.on_lookup(Lookup::Invalid, late);
        assert_eq!(drain(&mut ivr), vec![Action::Play(Prompt::InvalidPin)]);
        assert!(ivr.deadline().is_some_and(|d| d > late), "time to key again");
    }

    #[test]
    fn welcome_prompt_plays_at_start() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        assert_eq!(drain(&mut ivr), vec![Action::Play(Prompt::WelcomeEnterPin)]);
        assert!(ivr.is_collecting());
    }

    #[test]
    fn right_pin_then_hash_plays_joining_and_joins() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        ivr.on_prompt_finished(t0 + Duration::from_secs(3));
        assert_eq!(
            keys(&mut ivr, "1234#", t0 + Duration::from_secs(4)),
            vec![resolve("1234")]
        );
        ivr.on_lookup(room(), t0 + Duration::from_secs(4));
        assert_eq!((ivr.entries(), ivr.attempts()), (1, 0), "a right PIN is an entry, not a failure");
        assert_eq!(
            drain(&mut ivr),
            vec![
                Action::Play(Prompt::Joining),
                Action::Join(Grant {
                    room: "standup".into(),
                    ..Grant::default()
                })
            ]
        );
        assert!(ivr.is_done());
        assert_eq!(ivr.deadline(), None);
    }

    #[test]
    fn digit_during_prompt_barges_in_and_counts() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        let acts = keys(&mut ivr, "42#", t0 + Duration::from_secs(1));
        assert_eq!(acts, vec![Action::StopPrompt, resolve("42")]);
    }

    #[test]
    fn star_clears_entry_and_replays_prompt() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        ivr.on_prompt_finished(t0);
        let acts = keys(&mut ivr, "99*", t0);
        assert_eq!(acts, vec![Action::Play(Prompt::WelcomeEnterPin)]);
        let acts = keys(&mut ivr, "123#", t0);
        assert_eq!(acts, vec![Action::StopPrompt, resolve("123")]);
    }

    #[test]
    fn no_first_digit_replays_prompt_then_says_goodbye() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        let mut now = t0;
        for _ in 0..2 {
            ivr.on_prompt_finished(now);
            now = ivr.deadline().expect("first-digit deadline");
            assert_eq!(now, ivr.deadline().unwrap());
            ivr.on_timeout(now);
            assert_eq!(drain(&mut ivr), vec![Action::Play(Prompt::WelcomeEnterPin)]);
        }
        ivr.on_prompt_finished(now);
        let deadline = ivr.deadline().unwrap();
        assert_eq!(deadline, now + Duration::from_secs(10));
        ivr.on_timeout(deadline);
        assert_eq!(drain(&mut ivr), vec![Action::Play(Prompt::Goodbye)]);
        ivr.on_prompt_finished(deadline + Duration::from_secs(2));
        assert_eq!(drain(&mut ivr), vec![Action::HangUp(EndReason::NoInput)]);
    }

    #[test]
    fn early_timeout_call_changes_nothing() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        ivr.on_prompt_finished(t0);
        ivr.on_timeout(t0 + Duration::from_secs(9));
        assert!(drain(&mut ivr).is_empty());
    }

    #[test]
    fn inter_digit_pause_ends_the_entry() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        ivr.on_prompt_finished(t0);
        keys(&mut ivr, "5", t0 + Duration::from_secs(1));
        keys(&mut ivr, "6", t0 + Duration::from_secs(3));
        assert_eq!(ivr.deadline(), Some(t0 + Duration::from_secs(8)));
        ivr.on_timeout(t0 + Duration::from_secs(8));
        assert_eq!(drain(&mut ivr), vec![resolve("56")]);
    }

    #[test]
    fn wrong_pin_three_times_plays_goodbye_and_hangs_up() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        for attempt in 1..=3u32 {
            assert_eq!(
                keys(&mut ivr, "000#", t0),
                vec![Action::StopPrompt, resolve("000")]
            );
            ivr.on_lookup(Lookup::Invalid, t0);
            assert_eq!(ivr.attempts(), attempt);
            let expected = if attempt < 3 {
                Prompt::InvalidPin
            } else {
                Prompt::TooManyAttemptsGoodbye
            };
            assert_eq!(drain(&mut ivr), vec![Action::Play(expected)]);
        }
        // Keys while saying goodbye are not a fourth attempt.
        assert!(keys(&mut ivr, "1#", t0).is_empty());
        ivr.on_prompt_finished(t0);
        assert_eq!(
            drain(&mut ivr),
            vec![Action::HangUp(EndReason::TooManyAttempts)]
        );
        assert!(ivr.is_done());
    }

    #[test]
    fn invalid_pin_prompt_then_first_digit_timer_restarts() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        keys(&mut ivr, "1#", t0);
        ivr.on_lookup(Lookup::Invalid, t0);
        drain(&mut ivr);
        let t1 = t0 + Duration::from_secs(2);
        ivr.on_prompt_finished(t1);
        assert_eq!(ivr.deadline(), Some(t1 + Duration::from_secs(10)));
    }

    #[test]
    fn lone_hash_is_not_an_attempt() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        ivr.on_prompt_finished(t0);
        assert!(keys(&mut ivr, "#", t0).is_empty());
        assert_eq!(ivr.attempts(), 0);
        assert_eq!(ivr.deadline(), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn keys_during_lookup_are_ignored() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        keys(&mut ivr, "7#", t0);
        assert!(keys(&mut ivr, "8#", t0).is_empty());
        ivr.on_lookup(Lookup::Invalid, t0);
        drain(&mut ivr);
        assert_eq!(
            keys(&mut ivr, "9#", t0),
            vec![Action::StopPrompt, resolve("9")]
        );
    }

    #[test]
    fn locked_out_caller_hears_locked_out_and_is_hung_up() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        keys(&mut ivr, "1234#", t0);
        ivr.on_lookup(Lookup::LockedOut, t0);
        assert_eq!(drain(&mut ivr), vec![Action::Play(Prompt::LockedOut)]);
        ivr.on_prompt_finished(t0);
        assert_eq!(drain(&mut ivr), vec![Action::HangUp(EndReason::LockedOut)]);
    }

    #[test]
    fn store_unavailable_plays_service_unavailable_and_hangs_up() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        keys(&mut ivr, "1234#", t0);
        ivr.on_lookup(Lookup::Unavailable, t0);
        assert_eq!(
            drain(&mut ivr),
            vec![Action::Play(Prompt::ServiceUnavailable)]
        );
        ivr.on_prompt_finished(t0);
        assert_eq!(
            drain(&mut ivr),
            vec![Action::HangUp(EndReason::ServiceUnavailable)]
        );
    }

    #[test]
    fn menu_time_limit_ends_even_an_active_caller() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.max_ivr_time = Duration::from_secs(30);
        let mut ivr = Ivr::start(c, t0);
        drain(&mut ivr);
        let mut now = t0;
        // Keep typing a digit every 4 s (never pausing long enough to submit).
        while now < t0 + Duration::from_secs(28) {
            now += Duration::from_secs(4);
            keys(&mut ivr, "1", now);
        }
        assert_eq!(ivr.deadline(), Some(t0 + Duration::from_secs(30)));
        ivr.on_timeout(t0 + Duration::from_secs(30));
        assert_eq!(drain(&mut ivr), vec![Action::Play(Prompt::Goodbye)]);
        ivr.on_prompt_finished(t0 + Duration::from_secs(31));
        assert_eq!(
            drain(&mut ivr),
            vec![Action::HangUp(EndReason::IvrTimeLimit)]
        );
    }

    #[test]
    fn overlong_entry_is_capped_and_still_looked_up() {
        let t0 = Instant::now();
        let mut ivr = Ivr::start(cfg(), t0);
        drain(&mut ivr);
        let long: String = std::iter::repeat('3').take(100).collect();
        let acts = keys(&mut ivr, &format!("{long}#"), t0);
        match acts.last() {
            Some(Action::Resolve(e)) => assert_eq!(e.digits().len(), MAX_ENTRY_DIGITS),
            other => panic!("expected a lookup, got {other:?}"),
        }
    }

    #[test]
    fn pin_entry_debug_hides_digits() {
        let e = PinEntry("123456".into());
        assert!(!format!("{e:?}").contains("123456"));
    }
}
