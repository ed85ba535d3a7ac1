//! Clip lists: what the gateway says to a caller in the room, as a short sequence of recorded
//! pieces played back to back.
//!
//! In-room keypad controls answer with sentences built from pieces: "There are" + "twenty" +
//! "one" + "participants", "To mute or unmute, press" + "star" + "six". Numbers are composed
//! from a few base words per language (English "twenty" "one"; French "soixante" "et" "onze")
//! instead of one recording per number. A [`ClipList`] is a fixed-capacity array, so building
//! and playing one on the media path never allocates: the call asks for a list
//! ([`count_speech`], [`key_speech`]), then
//! [`PromptPlayer::play_clips`](super::PromptPlayer::play_clips) queues the shared samples each piece resolves to through
//! [`PromptCatalog::clip`](super::PromptCatalog::clip).

use std::fmt;

use super::{Language, PromptId};

/// One piece of speech or sound that a catalog can resolve to samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clip {
    /// A whole recorded prompt.
    Prompt(PromptId),
    /// A number word, to compose spoken numbers ([`number_speech`]). A word the catalog's
    /// language does not use (French has no "seventy") resolves to nothing.
    Word(NumberWord),
    /// A keypad key spoken by name: `'0'`–`'9'` as the number word, `'*'` as
    /// [`PromptId::KeyStar`], `'#'` as [`PromptId::KeyHash`]. Any other character resolves to
    /// nothing.
    Key(char),
    /// The rising chime played when someone joins the room.
    JoinTone,
    /// The falling chime played when someone leaves the room.
    LeaveTone,
}

/// A word that has a recording of its own, from which numbers up to 99 are spoken: 0 to 19,
/// the tens, and the French "et" (vingt-et-un). French has no "seventy" or "ninety" of its
/// own (soixante-dix, quatre-vingt-dix), English no "and". The file of each is `<name>.wav`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumberWord {
    Zero,
    One,
    Two,
    Three,
    Four,
    Five,
    Six,
    Seven,
    Eight,
    Nine,
    Ten,
    Eleven,
    Twelve,
    Thirteen,
    Fourteen,
    Fifteen,
    Sixteen,
    Seventeen,
    Eighteen,
    Nineteen,
    Twenty,
    Thirty,
    Forty,
    Fifty,
    Sixty,
    Seventy,
    Eighty,
    Ninety,
    /// French "et", between the tens and "un" or "onze".
    And,
}

impl NumberWord {
    /// Number of words, across languages.
    pub const COUNT: usize = 29;

    /// Every word, in catalog order.
    pub const ALL: [NumberWord; NumberWord::COUNT] = [
        NumberWord::Zero,
        NumberWord::One,
        NumberWord::Two,
        NumberWord::Three,
        NumberWord::Four,
        NumberWord::Five,
        NumberWord::Six,
        NumberWord::Seven,
        NumberWord::Eight,
        NumberWord::Nine,
        NumberWord::Ten,
        NumberWord::Eleven,
        NumberWord::Twelve,
        NumberWord::Thirteen,
        NumberWord::Fourteen,
        NumberWord::Fifteen,
        NumberWord::Sixteen,
        NumberWord::Seventeen,
        NumberWord::Eighteen,
        NumberWord::Nineteen,
        NumberWord::Twenty,
        NumberWord::Thirty,
        NumberWord::Forty,
        NumberWord::Fifty,
        NumberWord::Sixty,
        NumberWord::Seventy,
        NumberWord::Eighty,
        NumberWord::Ninety,
        NumberWord::And,
    ];

    /// The word for `n`, where `n` has one: 0–19 or a multiple of ten up to 90.
    pub fn of(n: u8) -> Option<NumberWord> {
        NumberWord::ALL.into_iter().find(|w| w.value() == Some(n))
    }

    /// The number the word says; `None` for "and".
    pub const fn value(self) -> Option<u8> {
        let index = self as u8;
        match self {
            NumberWord::And => None,
            // Zero to Nineteen sit at their value; the tens follow from index 20.
            _ if index < 20 => Some(index),
            _ => Some((index - 18) * 10),
        }
    }

    /// The file stem: `number_0` ... `number_90`, `number_and`.
    pub const fn name(self) -> &'static str {
        match self {
            NumberWord::Zero => "number_0",
            NumberWord::One => "number_1",
            NumberWord::Two => "number_2",
            NumberWord::Three => "number_3",
            NumberWord::Four => "number_4",
            NumberWord::Five => "number_5",
            NumberWord::Six => "number_6",
            NumberWord::Seven => "number_7",
            NumberWord::Eight => "number_8",
            NumberWord::Nine => "number_9",
            NumberWord::Ten => "number_10",
            NumberWord::Eleven => "number_11",
            NumberWord::Twelve => "number_12",
            NumberWord::Thirteen => "number_13",
            NumberWord::Fourteen => "number_14",
            NumberWord::Fifteen => "number_15",
            NumberWord::Sixteen => "number_16",
            NumberWord::Seventeen => "number_17",
            NumberWord::Eighteen => "number_18",
            NumberWord::Nineteen => "number_19",
            NumberWord::Twenty => "number_20",
            NumberWord::Thirty => "number_30",
            NumberWord::Forty => "number_40",
            NumberWord::Fifty => "number_50",
            NumberWord::Sixty => "number_60",
            NumberWord::Seventy => "number_70",
            NumberWord::Eighty => "number_80",
            NumberWord::Ninety => "number_90",
            NumberWord::And => "number_and",
        }
    }

    /// Whether `language` speaks numbers with this word (and so ships a recording of it).
    pub const fn is_used_in(self, language: Language) -> bool {
        match language {
            Language::En => !matches!(self, NumberWord::And),
            Language::Fr => !matches!(self, NumberWord::Seventy | NumberWord::Ninety),
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for NumberWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A short sequence of clips in a fixed array: built and played without allocating.
#[derive(Clone, Copy)]
pub struct ClipList {
    clips: [Clip; ClipList::CAPACITY],
    len: usize,
}

impl ClipList {
    /// The most clips a list holds: a help listing of four options, each a phrase, "star" and
    /// a digit, is 12; a spoken count at most 5.
    pub const CAPACITY: usize = 24;

    pub const fn new() -> Self {
        Self {
            clips: [Clip::JoinTone; ClipList::CAPACITY],
            len: 0,
        }
    }

    /// Appends `clip`; returns `false`, leaving the list as it was, when it is full.
    pub fn push(&mut self, clip: Clip) -> bool {
        match self.clips.get_mut(self.len) {
            Some(slot) => {
                *slot = clip;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Appends every clip of `other`; returns `false`, leaving the list as it was, when they
    /// do not all fit.
    pub fn append(&mut self, other: &ClipList) -> bool {
        if self.len + other.len > ClipList::CAPACITY {
            return false;
        }
        for clip in other.iter() {
            self.push(clip);
        }
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[Clip] {
        self.clips.get(..self.len).unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = Clip> + '_ {
        self.as_slice().iter().copied()
    }
}

impl Default for ClipList {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for ClipList {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for ClipList {}

impl fmt::Debug for ClipList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<'a> IntoIterator for &'a ClipList {
    type Item = Clip;
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, Clip>>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter().copied()
    }
}

/// The number words that say `n` in `language`, for `n` up to 99; an empty list above.
///
/// English: "twenty" "one". French (metropolitan counting): "vingt" "et" "un" for 21, 31 ... 61;
/// "soixante" "et" "onze" for 71; "soixante" "dix" ... "dix-neuf" for 70, 72–79;
/// "quatre-vingt" "un" ... "neuf" for 81–89 (no "et"); "quatre-vingt" "dix" ... "dix-neuf" for
/// 90–99.
pub fn number_speech(language: Language, n: u8) -> ClipList {
    let mut list = ClipList::new();
    let (tens, unit) = (n / 10, n % 10);
    // French "et" before "un" and "onze": vingt-et-un ... soixante-et-onze, not after 80.
    let and = language == Language::Fr && unit == 1 && (2..=7).contains(&tens);
    let (lead, rest) = match (language, tens) {
        (_, 10..) => return list,
        (_, 0 | 1) => (None, n),
        (Language::En, _) | (Language::Fr, 2..=6 | 8) => (Some(tens * 10), unit),
        (Language::Fr, 7) => (Some(60), 10 + unit),
        (Language::Fr, _) => (Some(80), 10 + unit),
    };
    let words = [
        lead.and_then(NumberWord::of),
        and.then_some(NumberWord::And),
        (lead.is_none() || rest > 0)
            .then(|| NumberWord::of(rest))
            .flatten(),
    ];
    for word in words.into_iter().flatten() {
        list.push(Clip::Word(word));
    }
    list
}

/// What the caller hears when asking how many are in the room; `participants` counts everyone
/// in it, the caller included. Alone (or before the room has answered, 0): "You are the only
/// participant." 2 to 99: "There are", the number, "participants". From 100: "There are more than
/// ninety-nine participants."
pub fn count_speech(language: Language, participants: usize) -> ClipList {
    let mut list = ClipList::new();
    match u8::try_from(participants) {
        Ok(0 | 1) => {
            list.push(Clip::Prompt(PromptId::OnlyParticipant));
        }
        Ok(n @ 2..=99) => {
            list.push(Clip::Prompt(PromptId::ThereAre));
            list.append(&number_speech(language, n));
            list.push(Clip::Prompt(PromptId::Participants));
        }
        _ => {
            list.push(Clip::Prompt(PromptId::MoreThanNinetyNine));
        }
    }
    list
}

/// The keys of `keys` spoken one by one: `"*6"` is "star" "six". Characters that are not keypad
/// keys (`0`–`9`, `*`, `#`) are skipped; keys beyond [`ClipList::CAPACITY`] are dropped.
pub fn key_speech(keys: &str) -> ClipList {
    let mut list = ClipList::new();
    for key in keys
        .chars()
        .filter(|c| c.is_ascii_digit() || matches!(c, '*' | '#'))
    {
        if !list.push(Clip::Key(key)) {
            break;
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use NumberWord::*;

    fn words(list: &ClipList) -> Vec<NumberWord> {
        list.iter()
            .filter_map(|c| match c {
                Clip::Word(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    fn count(language: Language, n: usize) -> (Vec<Clip>, Vec<NumberWord>) {
        let list = count_speech(language, n);
        (list.as_slice().to_vec(), words(&list))
    }

    #[test]
    fn number_words_sit_at_their_index_and_name_their_value() {
        for (i, word) in NumberWord::ALL.iter().enumerate() {
            assert_eq!(word.index(), i);
            match word.value() {
                Some(v) => {
                    assert_eq!(word.name(), format!("number_{v}"));
                    assert_eq!(NumberWord::of(v), Some(*word));
                }
                None => assert_eq!(word.name(), "number_and"),
            }
        }
        assert_eq!(Ninety.value(), Some(90));
        assert_eq!(NumberWord::of(21), None);
    }

    #[test]
    fn a_lone_caller_hears_they_are_the_only_participant() {
        for lang in Language::ALL {
            for n in [0, 1] {
                let (clips, _) = count(lang, n);
                assert_eq!(clips, [Clip::Prompt(PromptId::OnlyParticipant)]);
            }
        }
    }

    #[test]
    fn counts_from_one_hundred_are_more_than_ninety_nine() {
        for lang in Language::ALL {
            for n in [100, 101, 5_000, usize::MAX] {
                let (clips, _) = count(lang, n);
                assert_eq!(clips, [Clip::Prompt(PromptId::MoreThanNinetyNine)]);
            }
        }
    }

    #[test]
    fn a_count_is_there_are_number_participants() {
        let (clips, _) = count(Language::En, 2);
        assert_eq!(
            clips,
            [
                Clip::Prompt(PromptId::ThereAre),
                Clip::Word(Two),
                Clip::Prompt(PromptId::Participants)
            ]
        );
        for lang in Language::ALL {
            for n in 2..=99 {
                let (clips, words) = count(lang, n);
                assert_eq!(clips.first(), Some(&Clip::Prompt(PromptId::ThereAre)));
                assert_eq!(clips.last(), Some(&Clip::Prompt(PromptId::Participants)));
                assert_eq!(clips.len(), words.len() + 2, "{lang} {n}");
                assert!(words.iter().all(|w| w.is_used_in(lang)), "{lang} {n}");
            }
        }
    }

    #[test]
    fn english_numbers_are_tens_then_units() {
        let cases: [(usize, &[NumberWord]); 9] = [
            (2, &[Two]),
            (3, &[Three]),
            (19, &[Nineteen]),
            (21, &[Twenty, One]),
            (70, &[Seventy]),
            (71, &[Seventy, One]),
            (80, &[Eighty]),
            (81, &[Eighty, One]),
            (99, &[Ninety, Nine]),
        ];
        for (n, expected) in cases {
            assert_eq!(count(Language::En, n).1, expected, "{n}");
        }
        assert_eq!(count(Language::En, 91).1, [Ninety, One]);
    }

    #[test]
    fn french_numbers_follow_french_counting() {
        let cases: [(usize, &[NumberWord]); 14] = [
            (2, &[Two]),
            (3, &[Three]),
            (17, &[Seventeen]),
            (21, &[Twenty, And, One]),
            (22, &[Twenty, Two]),
            (61, &[Sixty, And, One]),
            (70, &[Sixty, Ten]),
            (71, &[Sixty, And, Eleven]),
            (72, &[Sixty, Twelve]),
            (80, &[Eighty]),
            (81, &[Eighty, One]),
            (90, &[Eighty, Ten]),
            (91, &[Eighty, Eleven]),
            (99, &[Eighty, Nineteen]),
        ];
        for (n, expected) in cases {
            assert_eq!(count(Language::Fr, n).1, expected, "{n}");
        }
        let names: Vec<_> = count(Language::Fr, 71).1.iter().map(|w| w.name()).collect();
        assert_eq!(names, ["number_60", "number_and", "number_11"]);
    }

    #[test]
    fn every_number_to_ninety_nine_is_spoken_and_none_above() {
        for lang in Language::ALL {
            for n in 0..=99 {
                let list = number_speech(lang, n);
                assert!((1..=3).contains(&list.len()), "{lang} {n}");
            }
            assert!(number_speech(lang, 100).is_empty());
        }
    }

    #[test]
    fn keys_are_spoken_one_by_one_and_other_characters_skipped() {
        let list = key_speech("*6");
        assert_eq!(list.as_slice(), [Clip::Key('*'), Clip::Key('6')]);
        let list = key_speech("# 0a9*");
        assert_eq!(
            list.as_slice(),
            [
                Clip::Key('#'),
                Clip::Key('0'),
                Clip::Key('9'),
                Clip::Key('*')
            ]
        );
        assert!(key_speech("").is_empty());
        assert!(key_speech("héllo").is_empty());
        assert_eq!(key_speech(&"1".repeat(100)).len(), ClipList::CAPACITY);
    }

    #[test]
    fn a_full_list_refuses_more_and_stays_as_it_was() {
        let mut list = ClipList::new();
        for _ in 0..ClipList::CAPACITY {
            assert!(list.push(Clip::JoinTone));
        }
        assert!(!list.push(Clip::LeaveTone));
        assert_eq!(list.len(), ClipList::CAPACITY);
        assert!(list.iter().all(|c| c == Clip::JoinTone));

        let mut short = key_speech("*1");
        let before = short;
        assert!(!short.append(&list));
        assert_eq!(short, before);
        assert!(short.append(&key_speech("#")));
        assert_eq!(short.len(), 3);
    }
}
