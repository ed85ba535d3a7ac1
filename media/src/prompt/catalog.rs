//! The prompt catalog of one language: every prompt the IVR speaks, ready at 8 and 16 kHz.
//!
//! Built once at start-up (DESIGN "Call flow" steps 3–6 name the prompts; the trunk's
//! `language` picks the catalog). Embedded WAVs are the default; an operator's directory may
//! replace any of them by a file named `<prompt>.wav`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::resample::resample;
use super::wav::{self, WavError};
use super::SampleRate;

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
}

impl PromptId {
    /// Number of prompts.
    pub const COUNT: usize = 11;

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

/// Every prompt of one language. Cloning shares the samples.
#[derive(Debug, Clone)]
pub struct PromptCatalog {
    language: Language,
    prompts: Arc<[Prompt]>,
}

impl PromptCatalog {
    /// Loads `language`'s prompts: from `override_dir/<name>.wav` where such a file exists,
    /// else from the binary. A directory that cannot be read, or a file that cannot be read or
    /// is not a 16-bit PCM WAV, is an error naming it.
    pub fn load(language: Language, override_dir: Option<&Path>) -> Result<Self, PromptError> {
        if let Some(dir) = override_dir {
            let entries = std::fs::read_dir(dir).map_err(|source| PromptError::Directory {
                path: dir.to_owned(),
                source,
            })?;
            // A misspelt file would silently never play: say so.
            for entry in entries.flatten() {
                let path = entry.path();
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                let is_wav = path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
                if is_wav && !PromptId::ALL.iter().any(|id| id.name() == stem) {
                    tracing::warn!(file = %path.display(), "prompt file matches no prompt; ignored");
                }
            }
        }
        let mut prompts = Vec::with_capacity(PromptId::COUNT);
        for id in PromptId::ALL {
            let file = override_dir.map(|dir| dir.join(format!("{}.wav", id.name())));
            let (decoded, overridden) = match file.filter(|f| f.exists()) {
                Some(path) => {
                    let bytes = std::fs::read(&path).map_err(|source| PromptError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    let decoded =
                        wav::parse(&bytes).map_err(|source| PromptError::Wav { path, source })?;
                    (decoded, true)
                }
                None => {
                    let decoded =
                        wav::parse(embedded(language, id)).map_err(|source| PromptError::Wav {
                            path: embedded_path(language, id),
                            source,
                        })?;
                    (decoded, false)
                }
            };
            prompts.push(Prompt {
                id,
                narrowband: resample(&decoded.samples, decoded.sample_rate, 8_000).into(),
                wideband: resample(&decoded.samples, decoded.sample_rate, 16_000).into(),
                overridden,
            });
        }
        Ok(Self {
            language,
            prompts: prompts.into(),
        })
    }

    pub fn language(&self) -> Language {
        self.language
    }

    pub fn get(&self, id: PromptId) -> &Prompt {
        // The catalog holds every PromptId at its index, by construction in `load`.
        &self.prompts[id.index()]
    }
}

/// Where an embedded prompt came from in the source tree, for error messages.
fn embedded_path(language: Language, id: PromptId) -> PathBuf {
    PathBuf::from(format!(
        "<embedded>/prompts/{}/{}.wav",
        language.code(),
        id.name()
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_sit_at_their_index() {
        for (i, id) in PromptId::ALL.iter().enumerate() {
            assert_eq!(id.index(), i);
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
