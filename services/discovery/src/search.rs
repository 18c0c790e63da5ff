//! Search: the caller's query and filters against this replica's index, a page at a time.
//!
//! Pages are keyset pages over (score, key), best first: the token carries the last hit's
//! score and key and a fingerprint of the query and filters it belongs to, so a page never
//! repeats or skips a hit of an unchanged index, and a token is refused for another query.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use duovarsity_common::auth::Claims;
use duovarsity_common::error::Error;
use duovarsity_proto::discovery::{FacetCount, Facets, SearchHit, SearchRequest, SearchResponse};
use tantivy::collector::{Count, FacetCollector, FacetCounts, TopDocs};
use tantivy::schema::Value as _;
use tantivy::{DocAddress, SegmentReader, TantivyDocument};

use crate::highlight::{mark, snippet};
use crate::index::{SearchIndex, key_of};
use crate::query::{self, Filters, Readable, Word};
use crate::{Discovery, store};

/// Hits per page unless asked.
const PAGE: usize = 10;
/// Bytes of text around a snippet's first match.
const SNIPPET: usize = 200;
/// Instructors the facet lists (the most frequent).
const TOP_INSTRUCTORS: usize = 20;

/// The sort key: score, then the document key ascending.
type Rank = (f32, Reverse<u64>);

/// Where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cursor {
    rank: Rank,
}

fn fingerprint(words: &[Word], filters: &Filters) -> u64 {
    let text: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    key_of(&format!(
        "{}|{:?}|{filters:?}",
        text.join(" "),
        words.last().map(|w| w.prefix)
    ))
}

impl Cursor {
    fn token(&self, fingerprint: u64) -> String {
        let (score, Reverse(key)) = self.rank;
        URL_SAFE_NO_PAD.encode(format!(
            "{:08x}{key:016x}{fingerprint:016x}",
            score.to_bits()
        ))
    }

    fn parse(token: &str, fingerprint: u64) -> Result<Option<Self>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || Error::invalid("page_token", "is not a token of this search");
        let text = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|text| text.len() == 40 && text.is_ascii())
            .ok_or_else(invalid)?;
        let number = |range: std::ops::Range<usize>| u64::from_str_radix(&text[range], 16);
        let (Ok(score), Ok(key), Ok(print)) = (number(0..8), number(8..24), number(24..40)) else {
            return Err(invalid());
        };
        if print != fingerprint {
            return Err(invalid());
        }
        let score = f32::from_bits(u32::try_from(score).map_err(|_| invalid())?);
        Ok(Some(Self {
            rank: (score, Reverse(key)),
        }))
    }
}

/// A search, checked, ready to run on the index.
struct Search {
    words: Vec<Word>,
    filters: Filters,
    readable: Readable,
    after: Option<Cursor>,
    page: usize,
    fingerprint: u64,
}

impl Discovery {
    /// Searches the catalog as `caller` may see it.
    pub async fn search(
        &self,
        caller: Option<&Claims>,
        request: SearchRequest,
    ) -> Result<SearchResponse, Error> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(Error::Unavailable {
                message: "the search index is being built".into(),
                retry_after: Some(std::time::Duration::from_secs(1)),
            });
        }
        let words = query::words(&request.q)?;
        let filters = Filters::parse(
            &request.level,
            &request.price,
            &request.language,
            &request.instructor_id,
        )?;
        let fingerprint = fingerprint(&words, &filters);
        let after = Cursor::parse(&request.page_token, fingerprint)?;
        let readable = match caller {
            None => Readable::default(),
            Some(claims) => Readable {
                all: claims.is_admin(),
                courses: if claims.is_admin() {
                    Vec::new()
                } else {
                    store::owned_courses(&self.db, &claims.sub).await?
                },
                instructor: Some(claims.sub.clone()),
            },
        };
        let search = Search {
            words,
            filters,
            readable,
            after,
            page: match request.page_size {
                0 => PAGE,
                n => usize::try_from(n).unwrap_or(PAGE),
            },
            fingerprint,
        };
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || {
            let began = std::time::Instant::now();
            let found = search.run(&index);
            metrics::histogram!("discovery_search_duration_seconds")
                .record(began.elapsed().as_secs_f64());
            found
        })
        .await
        .map_err(|e| Error::internal("search task", &e))?
    }
}

fn text(doc: &TantivyDocument, field: tantivy::schema::Field) -> &str {
    doc.get_first(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
}

fn counts(facets: &FacetCounts, name: &str, top: Option<usize>) -> Vec<FacetCount> {
    let root = format!("/{name}");
    let each = |(facet, count): (&tantivy::schema::Facet, u64)| FacetCount {
        value: facet
            .to_path()
            .last()
            .map(|v| v.to_string())
            .unwrap_or_default(),
        count: i64::try_from(count).unwrap_or(i64::MAX),
    };
    let mut values: Vec<FacetCount> = match top {
        Some(k) => facets
            .top_k(root.as_str(), k)
            .into_iter()
            .map(each)
            .collect(),
        None => facets.get(root.as_str()).map(each).collect(),
    };
    values.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    values
}

impl Search {
    fn run(self, index: &SearchIndex) -> Result<SearchResponse, Error> {
        let fields = index.fields;
        let searcher = index.searcher();
        let query = query::build(&fields, &self.words, &self.filters, &self.readable);
        let after = self.after.map(|c| c.rank);
        let excluded: Rank = (f32::NEG_INFINITY, Reverse(u64::MAX));
        let top = TopDocs::with_limit(self.page + 1).tweak_score(move |segment: &SegmentReader| {
            let keys = segment
                .fast_fields()
                .u64("key")
                .ok()
                .map(|column| column.first_or_default_col(0));
            move |doc: tantivy::DocId, score: f32| -> Rank {
                let rank = (score, Reverse(keys.as_ref().map_or(0, |k| k.get_val(doc))));
                match after {
                    Some(after) if rank >= after => excluded,
                    _ => rank,
                }
            }
        });
        let mut facets = FacetCollector::for_field("facets");
        for name in ["/level", "/price", "/language", "/instructor"] {
            facets.add_facet(name);
        }
        let (top, total, facets) = searcher
            .search(&query, &(top, Count, facets))
            .map_err(|e| Error::internal("searching the index", &e))?;
        let mut ranked: Vec<(Rank, DocAddress)> = top
            .into_iter()
            .filter(|(rank, _)| *rank != excluded)
            .collect();
        let more = ranked.len() > self.page;
        ranked.truncate(self.page);
        let next_page_token = match ranked.last() {
            Some((rank, _)) if more => Cursor { rank: *rank }.token(self.fingerprint),
            _ => String::new(),
        };
        let mut hits = Vec::with_capacity(ranked.len());
        for (rank, address) in ranked {
            let doc: TantivyDocument = searcher
                .doc(address)
                .map_err(|e| Error::internal("reading a search hit", &e))?;
            hits.push(self.hit(&fields, &doc, rank.0));
        }
        Ok(SearchResponse {
            hits,
            facets: Some(Facets {
                level: counts(&facets, "level", None),
                price: counts(&facets, "price", None),
                language: counts(&facets, "language", None),
                instructor: counts(&facets, "instructor", Some(TOP_INSTRUCTORS)),
            }),
            total: i64::try_from(total).unwrap_or(i64::MAX),
            next_page_token,
        })
    }

    fn hit(&self, fields: &crate::index::Fields, doc: &TantivyDocument, score: f32) -> SearchHit {
        let kind = text(doc, fields.kind);
        let course_id = text(doc, fields.course_id);
        let instructor_id = text(doc, fields.instructor);
        let title = text(doc, fields.title);
        let shown = if kind == "course" {
            text(doc, fields.summary)
        } else if let Some(free) = doc.get_first(fields.body).and_then(|v| v.as_str()) {
            free
        } else if self.readable.allows(course_id, instructor_id) {
            text(doc, fields.paid_body)
        } else {
            ""
        };
        SearchHit {
            kind: kind.to_string(),
            course_id: course_id.to_string(),
            lesson_id: if kind == "lesson" {
                text(doc, fields.id).to_string()
            } else {
                String::new()
            },
            title: title.to_string(),
            title_highlight: mark(title, &self.words),
            snippet: snippet(shown, &self.words, SNIPPET),
            course_title: text(doc, fields.course_title).to_string(),
            course_slug: text(doc, fields.course_slug).to_string(),
            level: text(doc, fields.level).to_string(),
            language: text(doc, fields.language).to_string(),
            free: doc.get_first(fields.free).and_then(|v| v.as_u64()) == Some(1),
            instructor_id: instructor_id.to_string(),
            score,
        }
    }
}
