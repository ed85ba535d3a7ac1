//! The prompt catalog of one language: every prompt the gateway speaks, in the IVR and in the
//! room, the number words counts and keys are composed from, and the join and leave chimes,
//! all ready at 8 and 16 kHz.
//!
//! Built once at start-up (DESIGN "Call flow" steps 3–6 name the IVR prompts; the trunk's
//! `language` picks the catalog). Embedded WAVs are the default; an operator's directory may
//! replace any of them by a file named `<prompt>.wav` or `number_<n>.wav`. In-room speech is
//! asked for as [`Clip`]s through [`PromptCatalog::clip`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::clip::{Clip, NumberWord};
use super::resample::resample;
use super::wav::{self, WavError};
use super::SampleRate;
use crate::tone;

/// The languages prompts are shipped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    En,
    Fr,
}

impl Language {
    /// Every shipped language.
    pub const ALL: [Language; 2] = [Language::En, Language::Fr];

    /// The configuration code (`en`, `fr`), also the name of the prompts' directory.
    pub const fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Fr => "fr",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A language code that has no prompts.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("no prompts for language `{0}` (available: en, fr)")]
pub struct UnknownLanguage(pub String);

impl FromStr for Language {
    type Err = UnknownLanguage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Language::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownLanguage(s.to_owned()))
    }
}

/// What the IVR can say. The file of each is `<name>.wav`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptId {
    /// "Welcome. Please enter your meeting PIN, followed by the hash key."
    WelcomeEnterPin,
    /// "That PIN is not valid. Please try again."
    InvalidPin,
    /// "Too many incorrect attempts. Goodbye."
    TooManyAttemptsGoodbye,
    /// "You are now joining the meeting."
    Joining,
    /// "You are the first participant in this meeting."
    FirstParticipant,
    /// "The meeting has ended. Goodbye."
    MeetingEnded,
    /// "The service is temporarily unavailable. Please try again later. Goodbye."
    ServiceUnavailable,
    /// "Too many failed attempts. Please try again later. Goodbye." (caller locked out)
    LockedOut,
    /// "We did not receive your PIN." (played before the welcome prompt is replayed)
    PinTimeout,
    /// "Goodbye."
    Goodbye,
    /// "Please hold. You will be connected shortly." (the PIN waits its turn to be checked)
    PleaseHold,
    /// "You are muted." (the caller pressed the mute key)
    Muted,
    /// "You are no longer muted."
    Unmuted,
    /// "You have been muted." (the room's admin muted the caller)
    MutedByRoom,
    /// "You are not allowed to unmute yourself in this meeting."
    UnmuteNotAllowed,
    /// "Your hand is raised."
    HandRaised,
    /// "Your hand is lowered."
    HandLowered,
    /// "The meeting will start when the host joins."
    WaitForHost,
    /// "You are the only participant."
    OnlyParticipant,
    /// "There are" (then a number, then [`PromptId::Participants`])
    ThereAre,
    /// "participants"
    Participants,
    /// "There are more than ninety-nine participants."
    MoreThanNinetyNine,
    /// "To mute or unmute, press" (then the keys)
    HelpMute,
    /// "To hear how many participants are here, press"
    HelpCount,
    /// "To raise or lower your hand, press"
    HelpHand,
    /// "To hear these options again, press"
    HelpHelp,
    /// "star" (the `*` key)
    KeyStar,
    /// "hash" (the `#` key)
    KeyHash,
}

impl PromptId {
    /// Number of prompts.
    pub const COUNT: usize = 28;

    /// Every prompt, in catalog order.
    pub const ALL: [PromptId; PromptId::COUNT] = [
        PromptId::WelcomeEnterPin,
        PromptId::InvalidPin,
        PromptId::TooManyAttemptsGoodbye,
        PromptId::Joining,
        PromptId::FirstParticipant,
        PromptId::MeetingEnded,
        PromptId::ServiceUnavailable,
        PromptId::LockedOut,
        PromptId::PinTimeout,
        PromptId::Goodbye,
        PromptId::PleaseHold,
        PromptId::Muted,
        PromptId::Unmuted,
        PromptId::MutedByRoom,
        PromptId::UnmuteNotAllowed,
        PromptId::HandRaised,
        PromptId::HandLowered,
        PromptId::WaitForHost,
        PromptId::OnlyParticipant,
        PromptId::ThereAre,
        PromptId::Participants,
        PromptId::MoreThanNinetyNine,
        PromptId::HelpMute,
        PromptId::HelpCount,
        PromptId::HelpHand,
        PromptId::HelpHelp,
        PromptId::KeyStar,
        PromptId::KeyHash,
    ];

    /// The file stem: `welcome_enter_pin`, `invalid_pin`, ...
    pub const fn name(self) -> &'static str {
        match self {
            PromptId::WelcomeEnterPin => "welcome_enter_pin",
            PromptId::InvalidPin => "invalid_pin",
            PromptId::TooManyAttemptsGoodbye => "too_many_attempts_goodbye",
            PromptId::Joining => "joining",
            PromptId::FirstParticipant => "first_participant",
            PromptId::MeetingEnded => "meeting_ended",
            PromptId::ServiceUnavailable => "service_unavailable",
            PromptId::LockedOut => "locked_out",
            PromptId::PinTimeout => "pin_timeout",
            PromptId::Goodbye => "goodbye",
            PromptId::PleaseHold => "please_hold",
            PromptId::Muted => "muted",
            PromptId::Unmuted => "unmuted",
            PromptId::MutedByRoom => "muted_by_room",
            PromptId::UnmuteNotAllowed => "unmute_not_allowed",
            PromptId::HandRaised => "hand_raised",
            PromptId::HandLowered => "hand_lowered",
            PromptId::WaitForHost => "wait_for_host",
            PromptId::OnlyParticipant => "only_participant",
            PromptId::ThereAre => "there_are",
            PromptId::Participants => "participants",
            PromptId::MoreThanNinetyNine => "more_than_ninety_nine",
            PromptId::HelpMute => "help_mute",
            PromptId::HelpCount => "help_count",
            PromptId::HelpHand => "help_hand",
            PromptId::HelpHelp => "help_help",
            PromptId::KeyStar => "key_star",
            PromptId::KeyHash => "key_hash",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for PromptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a catalog could not be built. Each names the prompt file at fault.
#[derive(Debug, Error)]
pub enum PromptError {
    #[error("prompt directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prompt file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prompt file {path}: {source}")]
    Wav { path: PathBuf, source: WavError },
}

/// One prompt at both call rates. Cloning shares the samples.
#[derive(Debug, Clone)]
pub struct Prompt {
    id: PromptId,
    narrowband: Arc<[i16]>,
    wideband: Arc<[i16]>,
    overridden: bool,
}

impl Prompt {
    pub fn id(&self) -> PromptId {
        self.id
    }

    /// The samples at `rate`, shared.
    pub fn samples(&self, rate: SampleRate) -> &Arc<[i16]> {
        match rate {
            SampleRate::Hz8000 => &self.narrowband,
            SampleRate::Hz16000 => &self.wideband,
        }
    }

    /// How long the prompt plays.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.wideband.len() as u64 * 1_000_000 / 16_000)
    }

    /// Whether this prompt came from the operator's directory rather than the binary.
    pub fn is_overridden(&self) -> bool {
        self.overridden
    }
}

/// Every prompt of one language, its number words and the room cues. Cloning shares the
/// samples.
#[derive(Debug, Clone)]
pub struct PromptCatalog {
    language: Language,
    prompts: Arc<[Prompt]>,
    /// At [`NumberWord::index`]; `None` for a word the language does not use.
    words: Arc<[Option<Samples>]>,
    join_cue: Samples,
    leave_cue: Samples,
}

/// One clip's samples at both call rates.
#[derive(Debug, Clone)]
struct Samples {
    narrowband: Arc<[i16]>,
    wideband: Arc<[i16]>,
}

impl Samples {
    fn at(&self, rate: SampleRate) -> &Arc<[i16]> {
        match rate {
            SampleRate::Hz8000 => &self.narrowband,
            SampleRate::Hz16000 => &self.wideband,
        }
    }
}

impl PromptCatalog {
    /// Loads `language`'s prompts and number words: each from `override_dir/<name>.wav` where
    /// such a file exists, else from the binary. A directory that cannot be read, or a file
    /// that cannot be read or is not a 16-bit PCM WAV, is an error naming it.
    pub fn load(language: Language, override_dir: Option<&Path>) -> Result<Self, PromptError> {
        if let Some(dir) = override_dir {
            warn_unknown_files(language, dir)?;
        }
        let mut prompts = Vec::with_capacity(PromptId::COUNT);
        for id in PromptId::ALL {
            let (samples, overridden) = load_clip(
                override_dir,
                id.name(),
                embedded(language, id),
                embedded_path(language, id.name()),
            )?;
            prompts.push(Prompt {
                id,
                narrowband: samples.narrowband,
                wideband: samples.wideband,
                overridden,
            });
        }
        let mut words = Vec::with_capacity(NumberWord::COUNT);
        for word in NumberWord::ALL {
            let samples = match embedded_word(language, word) {
                Some(bytes) => Some(
                    load_clip(
                        override_dir,
                        word.name(),
                        bytes,
                        embedded_path(language, word.name()),
                    )?
                    .0,
                ),
                None => None,
            };
            words.push(samples);
        }
        let cue = |render: fn(SampleRate) -> Arc<[i16]>| Samples {
            narrowband: render(SampleRate::Hz8000),
            wideband: render(SampleRate::Hz16000),
        };
        Ok(Self {
            language,
            prompts: prompts.into(),
            words: words.into(),
            join_cue: cue(tone::join_cue),
            leave_cue: cue(tone::leave_cue),
        })
    }

    pub fn language(&self) -> Language {
        self.language
    }

    pub fn get(&self, id: PromptId) -> &Prompt {
        // The catalog holds every PromptId at its index, by construction in `load`.
        &self.prompts[id.index()]
    }

    /// The samples `clip` plays at `rate`, shared; `None` for a number word this language
    /// does not use or a character that is no keypad key.
    pub fn clip(&self, clip: Clip, rate: SampleRate) -> Option<&Arc<[i16]>> {
        match clip {
            Clip::Prompt(id) => Some(self.get(id).samples(rate)),
            Clip::Word(word) => self.word(word, rate),
            Clip::Key('*') => Some(self.get(PromptId::KeyStar).samples(rate)),
            Clip::Key('#') => Some(self.get(PromptId::KeyHash).samples(rate)),
            Clip::Key(digit) => {
                let n = u8::try_from(digit.to_digit(10)?).ok()?;
                self.word(NumberWord::of(n)?, rate)
            }
            Clip::JoinTone => Some(self.join_cue.at(rate)),
            Clip::LeaveTone => Some(self.leave_cue.at(rate)),
        }
    }

    fn word(&self, word: NumberWord, rate: SampleRate) -> Option<&Arc<[i16]>> {
        self.words
            .get(word.index())
            .and_then(Option::as_ref)
            .map(|s| s.at(rate))
    }
}

/// Warns about each WAV file in an override directory that names nothing this language plays:
/// a misspelt file would otherwise silently never play.
fn warn_unknown_files(language: Language, dir: &Path) -> Result<(), PromptError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PromptError::Directory {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let is_wav = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        let known = PromptId::ALL.iter().any(|id| id.name() == stem)
            || NumberWord::ALL
                .iter()
                .any(|w| w.name() == stem && w.is_used_in(language));
        if is_wav && !known {
            tracing::warn!(
                file = %path.display(),
                %language,
                "prompt file matches no prompt; ignored"
            );
        }
    }
    Ok(())
}

/// Decodes the clip `name` from `override_dir/<name>.wav` if the file exists, else from the
/// embedded bytes, and resamples it to both call rates. Returns whether it was overridden.
fn load_clip(
    override_dir: Option<&Path>,
    name: &str,
    embedded: &[u8],
    embedded_path: PathBuf,
) -> Result<(Samples, bool), PromptError> {
    let file = override_dir.map(|dir| dir.join(format!("{name}.wav")));
    let (decoded, overridden) = match file.filter(|f| f.exists()) {
        Some(path) => {
            let bytes = std::fs::read(&path).map_err(|source| PromptError::Io {
                path: path.clone(),
                source,
            })?;
            let decoded = wav::parse(&bytes).map_err(|source| PromptError::Wav { path, source })?;
            (decoded, true)
        }
        None => {
            let decoded = wav::parse(embedded).map_err(|source| PromptError::Wav {
                path: embedded_path,
                source,
            })?;
            (decoded, false)
        }
    };
    let samples = Samples {
        narrowband: resample(&decoded.samples, decoded.sample_rate, 8_000).into(),
        wideband: resample(&decoded.samples, decoded.sample_rate, 16_000).into(),
    };
    Ok((samples, overridden))
}

/// Where an embedded prompt came from in the source tree, for error messages.
fn embedded_path(language: Language, name: &str) -> PathBuf {
    PathBuf::from(format!("<embedded>/prompts/{}/{name}.wav", language.code()))
}

macro_rules! embedded_prompts {
    ($lang:literal) => {
        [
            include_bytes!(concat!("../../prompts/", $lang, "/welcome_enter_pin.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/invalid_pin.wav")).as_slice(),
            include_bytes!(concat!(
                "../../prompts/",
                $lang,
                "/too_many_attempts_goodbye.wav"
            ))
            .as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/joining.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/first_participant.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/meeting_ended.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/service_unavailable.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/locked_out.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/pin_timeout.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/goodbye.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/please_hold.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/muted.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/unmuted.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/muted_by_room.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/unmute_not_allowed.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/hand_raised.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/hand_lowered.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/wait_for_host.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/only_participant.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/there_are.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/participants.wav")).as_slice(),
            include_bytes!(concat!(
                "../../prompts/",
                $lang,
                "/more_than_ninety_nine.wav"
            ))
            .as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/help_mute.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/help_count.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/help_hand.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/help_help.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/key_star.wav")).as_slice(),
            include_bytes!(concat!("../../prompts/", $lang, "/key_hash.wav")).as_slice(),
        ]
    };
}

/// The WAV files shipped in the binary, in `PromptId::ALL` order.
static EMBEDDED_EN: [&[u8]; PromptId::COUNT] = embedded_prompts!("en");
static EMBEDDED_FR: [&[u8]; PromptId::COUNT] = embedded_prompts!("fr");

fn embedded(language: Language, id: PromptId) -> &'static [u8] {
    let table = match language {
        Language::En => &EMBEDDED_EN,
        Language::Fr => &EMBEDDED_FR,
    };
    table[id.index()]
}

macro_rules! embedded_words {
    ($lang:literal, $($word:ident => $stem:literal),* $(,)?) => {
        [$((
            NumberWord::$word,
            include_bytes!(concat!("../../prompts/", $lang, "/", $stem, ".wav")).as_slice(),
        )),*]
    };
}

/// The number words shipped in the binary: English counts with its own "seventy" and
/// "ninety"; French composes them (soixante-dix, quatre-vingt-dix) and joins with "et".
static WORDS_EN: [(NumberWord, &[u8]); 28] = embedded_words!("en",
    Zero => "number_0", One => "number_1", Two => "number_2", Three => "number_3",
    Four => "number_4", Five => "number_5", Six => "number_6", Seven => "number_7",
    Eight => "number_8", Nine => "number_9", Ten => "number_10", Eleven => "number_11",
    Twelve => "number_12", Thirteen => "number_13", Fourteen => "number_14",
    Fifteen => "number_15", Sixteen => "number_16", Seventeen => "number_17",
    Eighteen => "number_18", Nineteen => "number_19", Twenty => "number_20",
    Thirty => "number_30", Forty => "number_40", Fifty => "number_50", Sixty => "number_60",
    Seventy => "number_70", Eighty => "number_80", Ninety => "number_90",
);
static WORDS_FR: [(NumberWord, &[u8]); 27] = embedded_words!("fr",
    Zero => "number_0", One => "number_1", Two => "number_2", Three => "number_3",
    Four => "number_4", Five => "number_5", Six => "number_6", Seven => "number_7",
    Eight => "number_8", Nine => "number_9", Ten => "number_10", Eleven => "number_11",
    Twelve => "number_12", Thirteen => "number_13", Fourteen => "number_14",
    Fifteen => "number_15", Sixteen => "number_16", Seventeen => "number_17",
    Eighteen => "number_18", Nineteen => "number_19", Twenty => "number_20",
    Thirty => "number_30", Forty => "number_40", Fifty => "number_50", Sixty => "number_60",
    Eighty => "number_80", And => "number_and",
);

fn embedded_word(language: Language, word: NumberWord) -> Option<&'static [u8]> {
    let table: &[(NumberWord, &[u8])] = match language {
        Language::En => &WORDS_EN,
        Language::Fr => &WORDS_FR,
    };
    table
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, bytes)| *bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_sit_at_their_index() {
        for (i, id) in PromptId::ALL.iter().enumerate() {
            assert_eq!(id.index(), i);
        }
        assert_eq!(PromptId::ALL[11], PromptId::Muted);
        assert_eq!(PromptId::ALL[PromptId::COUNT - 1], PromptId::KeyHash);
    }

    #[test]
    fn each_language_ships_exactly_the_number_words_it_uses() {
        for lang in Language::ALL {
            for word in NumberWord::ALL {
                assert_eq!(
                    embedded_word(lang, word).is_some(),
                    word.is_used_in(lang),
                    "{lang} {word}"
                );
            }
        }
        for (word, stem) in [
            (NumberWord::Seventeen, "number_17"),
            (NumberWord::And, "number_and"),
        ] {
            assert_eq!(word.name(), stem);
        }
    }

    #[test]
    fn language_codes_parse_back() {
        for lang in Language::ALL {
            assert_eq!(lang.code().parse::<Language>(), Ok(lang));
        }
        assert_eq!("FR".parse::<Language>(), Ok(Language::Fr));
        assert!("de".parse::<Language>().is_err());
    }
}
