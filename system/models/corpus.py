"""A small built-in English corpus for training the offline tiny model's BPE tokenizer.

The sentences cover the vocabulary of the embedded default run (pets, everyday questions,
polite phrasing) so that prompts and sampled responses tokenise into reasonably short
sequences. The tokenizer is byte-level, so text outside this corpus still encodes.
"""

from __future__ import annotations

_SUBJECTS = (
    "my cat", "our pet", "the old cat", "a small animal", "a kitten", "a stray kitten",
    "my friend's cat", "the cat next door", "the dog", "a puppy", "the bird", "my rabbit",
)

_QUESTIONS = (
    "How can I help {s} stay calm?", "What toys does {s} like?", "Where should {s} sleep at night?",
    "How do I play with {s}?", "Describe a day in the life of {s}.", "What should I feed {s}?",
    "Give me one tip about {s}.", "Write a short note about {s}.", "Tell me about {s}.",
    "Why does {s} sleep all day?", "Is it safe to give {s} milk?", "How often should I brush {s}?",
)

_ANSWERS = (
    "Please give {s} a quiet corner, fresh water and a soft blanket. Thank you for asking.",
    "{S} likes small balls, paper bags and a string to chase. Please play gently.",
    "A warm bed away from the door is best for {s}, thank you.",
    "Feed {s} good food twice a day and keep the bowl clean, please.",
    "In the morning {s} eats, then naps in the sun, then plays until the evening.",
    "Talk softly, move slowly and let {s} come to you. Thank you for being kind.",
    "Brush {s} once a week and check the ears and the teeth.",
    "Sleep helps {s} save energy, so long naps are normal and healthy.",
)

_GENERAL = (
    "The quick brown fox jumps over the lazy dog.",
    "Thank you very much for your help today.",
    "Please let me know if you have any other questions.",
    "It is a good idea to ask a vet when you are not sure.",
    "Cats are curious animals that enjoy climbing and hiding in boxes.",
    "Dogs need walks every day, and they love to run in the park.",
    "A healthy pet drinks water, eats well and sleeps a lot.",
    "I am happy to help. Here is a short answer with one useful tip.",
    "Sorry, I do not know the answer, but I can try to find out.",
    "The weather is nice today, so we went outside for a long walk.",
    "She wrote a short letter to her friend and sent it in the morning.",
    "We read a book about the sea, the sun and the stars.",
    "Numbers like one, two, three, four, five and ten are easy to learn.",
    "Good answers are clear, polite and short.",
    "Hello! How are you? I hope you have a wonderful day.",
    "You are welcome. Please come back any time.",
)


# Replies that ignore the question's topic: the base model's bad habit that preference labels should remove.
_OFF_TOPIC = (
    "The weather is nice today, so we went outside for a long walk.",
    "She wrote a short letter to her friend and sent it in the morning.",
    "We read a book about the sea, the sun and the stars.",
    "Numbers like one, two, three, four, five and ten are easy to learn.",
    "Sorry, I do not know the answer, but I can try to find out.",
    "Hello! How are you? I hope you have a wonderful day.",
    "You are welcome. Please come back any time.",
    "Good answers are clear, polite and short.",
)


def pretraining_dialogues() -> list[tuple[str, str]]:
    """(question, reply) pairs the tiny model is pre-trained on when ``model.tiny.pretrain_steps`` > 0.

    Every pet question is paired with each on-topic answer about the same subject and with each
    off-topic reply, in equal numbers, so the pre-trained policy strays off topic about half the time:
    a preference signal the offline MiniLM judge ("a sentence about pets and animals") sees clearly.

    Returns:
        ``12 subjects × 12 questions × 16 replies`` pairs, deterministic.
    """
    dialogues: list[tuple[str, str]] = []
    for subject in _SUBJECTS:
        capitalised = subject[0].upper() + subject[1:]
        on_topic = [answer.format(s=subject, S=capitalised) for answer in _ANSWERS]
        for question in _QUESTIONS:
            dialogues.extend((question.format(s=subject), reply) for reply in (*on_topic, *_OFF_TOPIC))
    return dialogues


def builtin_corpus() -> list[str]:
    """The built-in corpus: templated questions and answers about pets plus general sentences.

    Returns:
        About 300 short English lines (deterministic, no randomness).
    """
    lines: list[str] = list(_GENERAL)
    for subject in _SUBJECTS:
        capitalised = subject[0].upper() + subject[1:]
        lines.extend(question.format(s=subject) for question in _QUESTIONS)
        lines.extend(answer.format(s=subject, S=capitalised) for answer in _ANSWERS)
    return lines
