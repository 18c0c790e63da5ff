//! The search index of one replica: a tantivy index in memory, one document per listed
//! course and one per live lesson of a listed course, rebuilt from the discovery database
//! at start and kept current by [`crate::follow`].
//!
//! - Words are split on anything but letters and digits, lower-cased and folded to ASCII
//!   (`words`), the same for documents, queries and highlights.
//! - A lesson's text goes to `body` when its course is free and to `paid_body` when it is
//!   paid: the query reaches `paid_body` only for courses the caller may read
//!   ([`crate::query`]), so a non-buyer can neither find a paid lesson by its text nor see it.
//! - Course attributes (level, price, language, instructor) are facets of every document
//!   of the course, for counts and filters.
//! - `key` (from the document id) breaks ties of equal scores, so pages are a stable order.

use std::sync::Mutex;

use duovarsity_common::error::Error;
use tantivy::schema::{
    FAST, Facet, FacetOptions, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::catalog::{CourseEntry, LessonEntry};

/// The analyzer of every text field.
pub const WORDS: &str = "words";
/// Indexing memory of the one writer thread (tantivy's floor is 15 MB).
const WRITER_BYTES: usize = 64 << 20;

/// The analyzer: words of letters and digits, lower case, ASCII.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The fields of the schema.
#[derive(Clone, Copy)]
pub struct Fields {
    pub id: Field,
    pub course_id: Field,
    pub kind: Field,
    pub title: Field,
    pub summary: Field,
    pub body: Field,
    pub paid_body: Field,
    pub course_title: Field,
    pub course_slug: Field,
    pub level: Field,
    pub language: Field,
    pub free: Field,
    pub instructor: Field,
    pub facets: Field,
    pub key: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(WORDS)
                .set_index_option(IndexRecordOption::WithFreqs),
        )
        .set_stored();
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        course_id: builder.add_text_field("course_id", STRING | STORED),
        kind: builder.add_text_field("kind", STORED),
        title: builder.add_text_field("title", text.clone()),
        summary: builder.add_text_field("summary", text.clone()),
        body: builder.add_text_field("body", text.clone()),
        paid_body: builder.add_text_field("paid_body", text),
        course_title: builder.add_text_field("course_title", STORED),
        course_slug: builder.add_text_field("course_slug", STORED),
        level: builder.add_text_field("level", STORED),
        language: builder.add_text_field("language", STORED),
        free: builder.add_u64_field("free", STORED),
        instructor: builder.add_text_field("instructor", STORED),
        facets: builder.add_facet_field("facets", FacetOptions::default()),
        key: builder.add_u64_field("key", FAST),
    };
    (builder.build(), fields)
}

/// A document's tie-break key: the first 8 bytes of its id's SHA-256 (the same on every
/// replica and release).
pub fn key_of(id: &str) -> u64 {
    let hex = duovarsity_common::digest::sha256_hex(id.as_bytes());
    u64::from_str_radix(&hex[..16], 16).unwrap_or_default()
}

/// The facet of `name` (`level`, `price`, `language`, `instructor`) with `value`.
pub fn facet(name: &str, value: &str) -> Facet {
    Facet::from_path([name, value])
}

/// The price facet's value.
pub fn price_value(free: bool) -> &'static str {
    if free { "free" } else { "paid" }
}

/// One replica's index.
pub struct SearchIndex {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    pub fields: Fields,
}

fn internal(context: &str) -> impl Fn(tantivy::TantivyError) -> Error + '_ {
    move |error| Error::internal(context, &error)
}

impl SearchIndex {
    pub fn new() -> Result<Self, Error> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        index.tokenizers().register(WORDS, analyzer());
        let writer = index
            .writer_with_num_threads(1, WRITER_BYTES)
            .map_err(internal("opening the search index writer"))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(internal("opening the search index reader"))?;
        Ok(Self {
            reader,
            writer: Mutex::new(writer),
            fields,
        })
    }

    pub fn searcher(&self) -> tantivy::Searcher {
        self.reader.searcher()
    }

    /// Applies `edits` and makes them visible to searches.
    pub fn apply(&self, edits: &[Edit<'_>]) -> Result<(), Error> {
        if edits.is_empty() {
            return Ok(());
        }
        self.stage(edits)?;
        self.commit()
    }

    /// Makes what was staged visible to searches (one commit: a build stages its pages
    /// and commits once, so it leaves few segments to merge while searches run).
    pub fn commit(&self) -> Result<(), Error> {
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| Error::internal("search index writer", &"poisoned"))?;
        writer
            .commit()
            .map_err(internal("committing the search index"))?;
        drop(writer);
        self.reader
            .reload()
            .map_err(internal("reloading the search index"))
    }

    /// Adds `edits` to the next commit.
    pub fn stage(&self, edits: &[Edit<'_>]) -> Result<(), Error> {
        let writer = self
            .writer
            .lock()
            .map_err(|_| Error::internal("search index writer", &"poisoned"))?;
        for edit in edits {
            match edit {
                Edit::RemoveCourse(course_id) => {
                    writer.delete_term(Term::from_field_text(self.fields.course_id, course_id));
                }
                Edit::RemoveDocument(id) => {
                    writer.delete_term(Term::from_field_text(self.fields.id, id));
                }
                Edit::PutCourse(course) => {
                    writer.delete_term(Term::from_field_text(self.fields.id, &course.id));
                    writer
                        .add_document(self.course_document(course))
                        .map_err(internal("indexing a course"))?;
                }
                Edit::PutLesson(lesson, course) => {
                    writer.delete_term(Term::from_field_text(self.fields.id, &lesson.id));
                    writer
                        .add_document(self.lesson_document(lesson, course))
                        .map_err(internal("indexing a lesson"))?;
                }
            }
        }
        Ok(())
    }

    /// Documents in the index (deleted ones excluded).
    pub fn documents(&self) -> u64 {
        self.searcher().num_docs()
    }

    /// Bytes the index's segments take.
    pub fn size_bytes(&self) -> Result<u64, Error> {
        let searcher = self.searcher();
        let mut total = 0u64;
        for segment in searcher.segment_readers() {
            let usage = segment
                .space_usage()
                .map_err(|e| Error::internal("measuring the search index", &e))?;
            total += usage.total().get_bytes();
        }
        Ok(total)
    }

    fn common(&self, doc: &mut TantivyDocument, id: &str, course: &CourseEntry) {
        let f = &self.fields;
        doc.add_text(f.id, id);
        doc.add_text(f.course_id, &course.id);
        doc.add_text(f.course_title, &course.title);
        doc.add_text(f.course_slug, &course.slug);
        doc.add_text(f.level, &course.level);
        doc.add_text(f.language, &course.language);
        doc.add_u64(f.free, u64::from(course.is_free()));
        doc.add_text(f.instructor, &course.instructor_id);
        doc.add_facet(f.facets, facet("level", &course.level));
        doc.add_facet(f.facets, facet("price", price_value(course.is_free())));
        doc.add_facet(f.facets, facet("language", &course.language));
        doc.add_facet(f.facets, facet("instructor", &course.instructor_id));
        doc.add_u64(f.key, key_of(id));
    }

    fn course_document(&self, course: &CourseEntry) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        self.common(&mut doc, &course.id, course);
        doc.add_text(self.fields.kind, "course");
        doc.add_text(self.fields.title, &course.title);
        let mut summary = course.summary.clone();
        for tag in &course.tags {
            summary.push('\n');
            summary.push_str(tag);
        }
        doc.add_text(self.fields.summary, summary);
        doc
    }

    fn lesson_document(&self, lesson: &LessonEntry, course: &CourseEntry) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        self.common(&mut doc, &lesson.id, course);
        doc.add_text(self.fields.kind, "lesson");
        doc.add_text(self.fields.title, &lesson.title);
        let body = if course.is_free() {
            self.fields.body
        } else {
            self.fields.paid_body
        };
        doc.add_text(body, &lesson.markdown);
        doc
    }
}

/// A change to the index.
#[derive(Debug)]
pub enum Edit<'a> {
    /// A course and every lesson of it leave the index.
    RemoveCourse(&'a str),
    /// One document (a lesson) leaves the index.
    RemoveDocument(&'a str),
    PutCourse(&'a CourseEntry),
    PutLesson(&'a LessonEntry, &'a CourseEntry),
}
