-- The lesson an AI request was about (a task naming a lesson): the analytics service counts
-- hint requests per lesson from the ai.usage events that carry it.
ALTER TABLE ai_usage ADD COLUMN course_id TEXT NOT NULL DEFAULT '';
ALTER TABLE ai_usage ADD COLUMN lesson_id TEXT NOT NULL DEFAULT '';
