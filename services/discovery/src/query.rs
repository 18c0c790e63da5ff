//! What the learner typed, as a tantivy query: every word must match somewhere (a title, a
//! summary or tags, or a lesson's text the caller may read), each word as typed (BM25)
//! or within its typo allowance, the last one also as a prefix while it is being typed.
//! Fuzzy and prefix matches score a constant per field, below what an exact title match
//! scores, so that exact words rank first; titles weigh three times a lesson's text.

use duovarsity_common::error::Error;
use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};

use crate::index::{Fields, analyzer, facet};

/// Words of a query at most (a longer query is refused, not cut).
pub const MAX_WORDS: usize = 10;
/// Weights of the fields a word can match in.
const TITLE: f32 = 3.0;
const SUMMARY: f32 = 1.5;
const BODY: f32 = 1.0;
/// The constant score of a typo or prefix match, per unit of field weight.
const FUZZY: f32 = 1.0;
const PREFIX: f32 = 1.5;

/// One word of the query, normalised like the index's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// Edits forgiven: none up to 4 letters, one for 5 to 8, two from 9.
    pub typos: u8,
    /// The last word, still being typed: it also matches words it begins.
    pub prefix: bool,
}

/// Typos forgiven in a word of `text`.
pub fn typos(text: &str) -> u8 {
    match text.chars().count() {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

/// The words of `q`. The last is a prefix unless `q` ends in a space (the learner finished
/// it) or it is a single letter (which would begin half the dictionary).
pub fn words(q: &str) -> Result<Vec<Word>, Error> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(q);
    let mut words = Vec::new();
    while stream.advance() {
        let text = stream.token().text.clone();
        words.push(Word {
            typos: typos(&text),
            text,
            prefix: false,
        });
    }
    if words.len() > MAX_WORDS {
        return Err(Error::invalid(
            "q",
            format!(
                "has {} words; at most {MAX_WORDS} are searched",
                words.len()
            ),
        ));
    }
    let finished = q.ends_with(char::is_whitespace);
    if let Some(last) = words.last_mut() {
        last.prefix = !finished && last.text.chars().count() >= 2;
    }
    Ok(words)
}

/// The facet filters of a search, each checked against the values there can be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    pub level: Option<String>,
    pub price: Option<String>,
    pub language: Option<String>,
    pub instructor: Option<String>,
}

fn given(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

impl Filters {
    pub fn parse(
        level: &str,
        price: &str,
        language: &str,
        instructor: &str,
    ) -> Result<Self, Error> {
        if !matches!(level, "" | "beginner" | "intermediate" | "advanced") {
            return Err(Error::invalid(
                "level",
                "must be beginner, intermediate or advanced",
            ));
        }
        if !matches!(price, "" | "free" | "paid") {
            return Err(Error::invalid("price", "must be free or paid"));
        }
        if language.len() > 35
            || !language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::invalid(
                "language",
                "must be a BCP 47 language tag such as en",
            ));
        }
        if !instructor.is_empty() && uuid::Uuid::parse_str(instructor).is_err() {
            return Err(Error::invalid("instructor_id", "must be a UUID"));
        }
        Ok(Self {
            level: given(level),
            price: given(price),
            language: given(language),
            instructor: given(instructor),
        })
    }

    fn pairs(&self) -> impl Iterator<Item = (&'static str, &String)> {
        [
            ("level", &self.level),
            ("price", &self.price),
            ("language", &self.language),
            ("instructor", &self.instructor),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
    }
}

/// Whose paid lesson text the caller may search and read.
#[derive(Debug, Clone, Default)]
pub struct Readable {
    /// Every course (admins).
    pub all: bool,
    /// Courses the caller holds.
    pub courses: Vec<String>,
    /// The caller, whose own courses they may read.
    pub instructor: Option<String>,
}

impl Readable {
    pub fn allows(&self, course_id: &str, instructor_id: &str) -> bool {
        self.all
            || self.courses.iter().any(|c| c == course_id)
            || self.instructor.as_deref() == Some(instructor_id)
    }

    /// The documents whose paid text the caller may search, or None for none.
    fn paid_filter(&self, fields: &Fields) -> Option<Box<dyn Query>> {
        if self.all {
            return Some(filter(Box::new(AllQuery)));
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = self
            .courses
            .iter()
            .map(|c| {
                let term = Term::from_field_text(fields.course_id, c);
                (Occur::Should, exact(term))
            })
            .collect();
        if let Some(me) = &self.instructor {
            let term = Term::from_facet(fields.facets, &facet("instructor", me));
            clauses.push((Occur::Should, exact(term)));
        }
        (!clauses.is_empty()).then(|| filter(Box::new(BooleanQuery::new(clauses))))
    }
}

fn exact(term: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(term, IndexRecordOption::Basic))
}

/// `query` as a filter: it narrows the matches and adds nothing to their scores.
fn filter(query: Box<dyn Query>) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(query, 0.0))
}

/// The ways `word` can match in `field`, weighted by `weight`.
fn variants(field: Field, word: &Word, weight: f32) -> Box<dyn Query> {
    let term = Term::from_field_text(field, &word.text);
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
        Occur::Should,
        Box::new(BoostQuery::new(
            Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
            weight,
        )),
    )];
    if word.typos > 0 {
        clauses.push((
            Occur::Should,
            Box::new(BoostQuery::new(
                Box::new(FuzzyTermQuery::new(term.clone(), word.typos, true)),
                weight * FUZZY,
            )),
        ));
    }
    if word.prefix {
        clauses.push((
            Occur::Should,
            Box::new(BoostQuery::new(
                Box::new(FuzzyTermQuery::new_prefix(term, word.typos, true)),
                weight * PREFIX,
            )),
        ));
    }
    Box::new(BooleanQuery::new(clauses))
}

/// The query for `words` under `filters`, reaching paid text only where `readable` says.
pub fn build(
    fields: &Fields,
    words: &[Word],
    filters: &Filters,
    readable: &Readable,
) -> Box<dyn Query> {
    let paid = readable.paid_filter(fields);
    let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for word in words {
        let mut anywhere: Vec<(Occur, Box<dyn Query>)> = vec![
            (Occur::Should, variants(fields.title, word, TITLE)),
            (Occur::Should, variants(fields.summary, word, SUMMARY)),
            (Occur::Should, variants(fields.body, word, BODY)),
        ];
        if let Some(paid) = &paid {
            let in_paid = BooleanQuery::new(vec![
                (Occur::Must, variants(fields.paid_body, word, BODY)),
                (Occur::Must, paid.box_clone()),
            ]);
            anywhere.push((Occur::Should, Box::new(in_paid)));
        }
        must.push((Occur::Must, Box::new(BooleanQuery::new(anywhere))));
    }
    for (name, value) in filters.pairs() {
        let term = Term::from_facet(fields.facets, &facet(name, value));
        must.push((Occur::Must, filter(exact(term))));
    }
    if words.is_empty() {
        must.push((Occur::Must, Box::new(AllQuery)));
    }
    Box::new(BooleanQuery::new(must))
}
