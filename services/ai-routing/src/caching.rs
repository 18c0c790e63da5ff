//! Which answers are shared through the cache, under which key.
//!
//! A request is cacheable when its settings are deterministic (`temperature` 0), or when
//! its task opts in (`policy.tasks.<task>.cacheable`) and names its context: then the key
//! is the context (task, lesson, exercise, hint level) rather than the wording, so a
//! thousand learners stuck on the same exercise cost one call. The key always covers the
//! resolved model and every parameter that changes the output; a parameter added to
//! [`Prompt`] must be added here (the test below lists them).

use duovarsity_proto::ai::Task;
use serde_json::json;

use crate::providers::Prompt;

/// The cache key of an answer of `model` to `prompt`, if it may be shared.
pub fn key(
    model: &str,
    prompt: &Prompt,
    task: Option<&Task>,
    task_cacheable: bool,
) -> Option<String> {
    let Prompt {
        messages,
        temperature,
        top_p,
        max_tokens,
        stop,
        seed,
        tools,
        response_format,
        presence_penalty,
        frequency_penalty,
    } = prompt;
    let parameters = json!({
        "model": model,
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": max_tokens,
        "stop": stop,
        "seed": seed,
        "tools": tools,
        "response_format": response_format,
        "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty,
    });
    let context =
        task.filter(|t| task_cacheable && !(t.lesson_id.is_empty() && t.exercise_id.is_empty()));
    let subject = match context {
        Some(task) => json!({
            "task": task.kind,
            "lesson": task.lesson_id,
            "exercise": task.exercise_id,
            "hint_level": task.hint_level,
        }),
        None if *temperature == Some(0.0) => json!({
            "messages": messages.iter().map(|m| [&m.role, &m.content]).collect::<Vec<_>>(),
        }),
        None => return None,
    };
    let canonical = json!({"parameters": parameters, "subject": subject}).to_string();
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    Some(hex::encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Message;

    fn prompt() -> Prompt {
        Prompt {
            messages: vec![Message {
                role: "user".into(),
                content: "why does my loop never end?".into(),
            }],
            temperature: Some(0.0),
            max_tokens: 100,
            ..Prompt::default()
        }
    }

    #[test]
    fn every_output_affecting_parameter_changes_the_key() {
        let base = key("m", &prompt(), None, false).unwrap();
        let variants: [fn(&mut Prompt); 10] = [
            |p| p.messages[0].content.push('!'),
            |p| p.messages[0].role = "system".into(),
            |p| p.top_p = Some(0.5),
            |p| p.max_tokens = 101,
            |p| p.stop = vec!["\n".into()],
            |p| p.seed = Some(7),
            |p| p.tools = vec![json!({"type": "function"})],
            |p| p.response_format = Some(json!({"type": "json_object"})),
            |p| p.presence_penalty = Some(0.1),
            |p| p.frequency_penalty = Some(0.1),
        ];
        for (n, change) in variants.iter().enumerate() {
            let mut changed = prompt();
            change(&mut changed);
            assert_ne!(
                key("m", &changed, None, false).unwrap(),
                base,
                "variant {n}"
            );
        }
        assert_ne!(
            key("other", &prompt(), None, false).unwrap(),
            base,
            "the model"
        );
        assert_eq!(key("m", &prompt(), None, false).unwrap(), base, "stable");
    }

    #[test]
    fn only_deterministic_or_opted_in_tasks_are_cached() {
        let mut warm = prompt();
        warm.temperature = Some(0.7);
        assert_eq!(key("m", &warm, None, false), None);
        let task = Task {
            kind: "hint".into(),
            lesson_id: "lesson-1".into(),
            exercise_id: "ex-3".into(),
            hint_level: 1,
        };
        let shared = key("m", &warm, Some(&task), true).unwrap();
        // Another learner's wording, same exercise and hint level: the same answer.
        let mut other = warm.clone();
        other.messages[0].content = "stuck on exercise 3".into();
        assert_eq!(key("m", &other, Some(&task), true).unwrap(), shared);
        let deeper = Task {
            hint_level: 2,
            ..task.clone()
        };
        assert_ne!(key("m", &other, Some(&deeper), true).unwrap(), shared);
        assert_eq!(
            key("m", &warm, Some(&task), false),
            None,
            "the task did not opt in"
        );
    }
}
