"""Tables and plots (Markdown + self-contained HTML). Imports its heavy dependencies lazily."""
